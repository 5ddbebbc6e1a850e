/* bitface native runtime: a whole packed network in one call.
 *
 * Python (bitface.runtime.plan) compiles a packed model into a list of stages over preallocated
 * buffers; this file runs them. Two activation layouts:
 *   float  HWC: value (y, x, c) at off + y*row + x*pix + c       (pix >= channels)
 *   bits   planar words: word w of pixel (y, x) at off + w*plane + y*row + x; bit c % 64 of word
 *          c / 64 is 1 where the real value is >= 0 (the sign convention of the packed format).
 * Borders (padding) are written once when the plan is built; stages write only interiors, so
 * padding is exact and costs nothing per call. Every buffer ends in slack, so 8-pixel vector loads
 * may run past a row; the outputs computed from such lanes are never stored.
 *
 * The binary convolution has three kernel paths chosen at run time: AVX-512 VPOPCNTDQ (sign bits
 * out: 8 output pixels per register, 16 output channels in registers, weights broadcast from memory;
 * floats out or padded: 16 output channels per register, 32-bit lanes for inputs of up to 32
 * channels), AVX2 (channel-vectorized for every output kind: nibble-table popcount in 16-, 32- or 64-bit
 * lanes by input width, vector epilogues) and portable C. All three give the same integers; tests check
 * each against the numpy reference. Compile with -ffp-contract=off: float epilogues must round like the
 * reference. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BF_X86 1
#include <immintrin.h>
#endif

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
static const char *ISA_NAMES[] = {"portable", "avx2", "avx512"};
static int isa_best = ISA_PORTABLE, isa_current = ISA_PORTABLE;

enum { ST_INPUT, ST_CONV, ST_BCONV, ST_POOL, ST_BPOOL, ST_SIGN, ST_AFFINE, ST_ADD, ST_UPSAMPLE, ST_KINDS };
enum { OUT_FLOAT = 0, OUT_BITS = 1 };
#define NPARAMS 40
#define NTENSORS 11
#define BLOCK 16 /* output channels per block (weights are stored in blocks of 16) */
#define PX 8     /* output pixels per block */
#define MAXWORDS 64 /* output words per pixel (4096 channels) */
#define LOW_NIBBLES 0x0f0f0f0f0f0f0f0full /* each byte's low 4 bits */

typedef struct {
    int64_t kind, in_buf, out_buf, ho, wo, kh, kw, cin, words, in_off, in_row, in_pix, in_plane, cout,
        cout_pad, out_mode, out_off, out_row, out_pix, out_plane, relu, size, stride, in2_buf, in2_off, in2_row,
        in2_pix, fix_w, aff_buf, aff_off, aff_row, aff_plane, aff_relu, pool, aff2_buf, aff2_off, aff2_row, aff2_plane,
        aff2_relu, no_store;
    const void *weight;
    const float *scale, *shift;
    const int32_t *lo, *hi;
    /* binary convs with built-in padding: what the +1 border adds to dot products, as
     * fix[row_class[y]][x][o] (x < fix_w, o < cout_pad; the padding must contribute 0) */
    const int32_t *fix, *row_class;
    /* fused into a binary conv's float epilogue: a residual sum (out = in2 + value), a 2x2 max-pool
     * (pool = 2: out and aff_out are the pooled maps; ho, wo the conv's), and the sign of a following
     * affine (a BatchNorm before the next binary layer) written as bits to aff_out */
    const float *in2, *aff_scale, *aff_shift;
    uint64_t *aff_out;
    /* real convs: a second following sign (a value read by two BatchNorms before binary layers), in
     * the words after the first one's in the epilogue's bits; no_store: the float value has no other
     * reader, so only its signs are written */
    const float *aff2_scale, *aff2_shift;
    uint64_t *aff2_out;
    uint32_t *weight32; /* binary convs of at most 32 input channels: the weights' low words (owned) */
    /* The AVX2 kernels' operands split into nibbles: each byte's low 4 bits, then (a second copy) its
     * high 4 bits, as bytes 0..15 that index VPSHUFB's count table after one XOR (a ^ w splits into
     * a's nibbles ^ w's). Owned: the weights (all low words, then all high words, of weight32 when
     * set, as 16-bit words where cin <= 16, else of weight), and room for the input words a run reads (nib_len low, then nib_len high). */
    void *nib_weight;
    uint64_t *nib_in;
    int64_t nib_len;
    /* binary convs to sign bits (owned). Thresholds from monotone functions are one-sided in the
     * mismatch count m: on <=> m <= top, or on <=> m >= bottom. Counts start at a bias that makes
     * the sign bit of the final count the output (flipped for the second kind): bias[cout_pad], then
     * per block of 16 channels the mask of flipped ones; where padding corrections apply, the bias
     * per pixel: [row class][cout_pad][fix_w] (8 pixels per load), and per row class and block of PX
     * pixels whether any correction is nonzero. A two-sided range (none comes from a BatchNorm) sends
     * the stage to the general kernel. */
    int64_t *bias, *fix_bias, fix_classes, two_sided;
    uint8_t *fix_block;
    /* narrow (32-bit lane) kernels: on <=> (uint32)(m - base) <= span, as [-base | span] x cout_pad,
     * and with padding [row class][fix_w][-base | span][cout_pad] (16 channels per load) */
    int32_t *range32, *fix_range32;
} Stage;

/* Each word's low nibbles into lo, its high nibbles (shifted down) into hi: Stage.nib_*. */
static inline void split_nibble_words(const uint64_t *src, int64_t n, uint64_t *lo, uint64_t *hi) {
    for (int64_t j = 0; j < n; j++) {
        lo[j] = src[j] & LOW_NIBBLES;
        hi[j] = (src[j] >> 4) & LOW_NIBBLES;
    }
}

static inline const int32_t *padding_fix_row(const Stage *s, int64_t y, int64_t x) {
    return s->fix + (s->row_class[y] * s->fix_w + x) * s->cout_pad;
}

/* The padding correction of output (y, x) in channel o (0 without built-in padding). */
static inline int64_t padding_fix(const Stage *s, int64_t y, int64_t x, int64_t o) {
    return s->fix ? padding_fix_row(s, y, x)[o] : 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Epilogues shared by the kernels: turn a block of results into outputs.                        */

/* Integer dot products (mism = popcount mismatches) of PX pixels x BLOCK channels. */
static void bin_epilogue(const Stage *s, const int64_t mism[BLOCK][PX], int64_t ob, int64_t np, int64_t y,
                         int64_t x0, void *out, uint64_t bits[PX][MAXWORDS]) {
    const int64_t k = s->cin * s->kh * s->kw;
    const int64_t nj = s->cout - ob * BLOCK < BLOCK ? s->cout - ob * BLOCK : BLOCK;
    for (int64_t j = 0; j < nj; j++) {
        const int64_t o = ob * BLOCK + j;
        for (int64_t p = 0; p < np; p++) {
            const int64_t dot = k - 2 * mism[j][p] - padding_fix(s, y, x0 + p, o);
            if (s->out_mode == OUT_BITS) {
                if (dot >= s->lo[o] && dot <= s->hi[o]) bits[p][o >> 6] |= (uint64_t)1 << (o & 63);
            } else {
                const int64_t x = x0 + p;
                float v = (float)dot * s->scale[o];
                v = v + s->shift[o];
                if (s->relu && v < 0) v = 0;
                if (s->in2) v = s->in2[s->in2_off + y * s->in2_row + x * s->in2_pix + o] + v;
                if (s->pool) { /* the window's first pixel stores, the others keep the max */
                    float *dst = (float *)out + s->out_off + (y >> 1) * s->out_row + (x >> 1) * s->out_pix + o;
                    if ((y | x) & 1) v = v > *dst ? v : *dst;
                    *dst = v;
                    if (!(y & x & 1)) continue; /* the window's signs once it is complete */
                } else {
                    ((float *)out)[s->out_off + y * s->out_row + x * s->out_pix + o] = v;
                }
                if (s->aff_out) {
                    float a = v * s->aff_scale[o];
                    a = a + s->aff_shift[o];
                    if (a >= 0 || s->aff_relu) bits[s->pool ? p >> 1 : p][o >> 6] |= (uint64_t)1 << (o & 63);
                }
            }
        }
    }
}

/* The words of sign bits a stage's epilogue assembles per pixel: its output's or fused affines'. */
static int64_t sign_words(const Stage *s) { return (s->cout + 63) / 64 * (s->aff2_out ? 2 : 1); }

static inline void clear_bits(const Stage *s, uint64_t bits[PX][MAXWORDS]) {
    const int64_t nw = sign_words(s);
    if (nw == 1) { /* the common case, without a memset call per pixel */
        for (int p = 0; p < PX; p++) bits[p][0] = 0;
        return;
    }
    for (int p = 0; p < PX; p++) memset(bits[p], 0, 8 * (size_t)nw);
}

static void store_bits(const Stage *s, uint64_t bits[PX][MAXWORDS], int64_t np, int64_t y, int64_t x0, void *out) {
    uint64_t *o = (uint64_t *)out + s->out_off + y * s->out_row + x0;
    const int64_t nw = (s->cout + 63) / 64;
    for (int64_t w = 0; w < nw; w++)
        for (int64_t p = 0; p < np; p++) o[w * s->out_plane + p] = bits[p][w];
}

/* After a block of pixels of a binary conv: its sign bits (bits out), or its fused affine's (of the
 * pooled pixels, once a fused pool's windows are complete). */
static void finish_bits(const Stage *s, uint64_t bits[PX][MAXWORDS], int64_t np, int64_t y, int64_t x0, void *out) {
    if (s->out_mode == OUT_BITS) return store_bits(s, bits, np, y, x0, out);
    if (!s->aff_out) return;
    if (s->pool) {
        if (!(y & 1)) return;
        np >>= 1, y >>= 1, x0 >>= 1;
    }
    const int64_t nw = (s->cout + 63) / 64;
    uint64_t *o = s->aff_out + s->aff_off + y * s->aff_row + x0;
    for (int64_t w = 0; w < nw; w++)
        for (int64_t p = 0; p < np; p++) o[w * s->aff_plane + p] = bits[p][w];
    if (!s->aff2_out) return;
    o = s->aff2_out + s->aff2_off + y * s->aff2_row + x0;
    for (int64_t w = 0; w < nw; w++)
        for (int64_t p = 0; p < np; p++) o[w * s->aff2_plane + p] = bits[p][nw + w];
}

/* ------------------------------------------------------------------------------------------- */
/* Binary convolution over packed planes. Weights: [cout_pad/16][kh][kw][words][16] uint64.       */

/* Popcount mismatches of PX pixels x BLOCK channels (block ob) at (y, x0), into mism[channel][pixel]. */
typedef void (*MismatchCount)(const Stage *s, const uint64_t *in, int64_t y, int64_t x0, int64_t np, int64_t ob,
                              int64_t mism[BLOCK][PX]);

#if defined(BF_X86)
__attribute__((target("popcnt")))
#endif
static void mismatches_portable(const Stage *s, const uint64_t *in, int64_t y, int64_t x0, int64_t np, int64_t ob,
                                int64_t mism[BLOCK][PX]) {
    const uint64_t *wp = (const uint64_t *)s->weight + ob * s->kh * s->kw * s->words * BLOCK;
    memset(mism, 0, sizeof(int64_t) * BLOCK * PX);
    for (int64_t ky = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++)
            for (int64_t w = 0; w < s->words; w++, wp += BLOCK) {
                const uint64_t *ip = in + s->in_off + w * s->in_plane + (y + ky) * s->in_row + x0 + kx;
                for (int64_t j = 0; j < BLOCK; j++)
                    for (int64_t p = 0; p < np; p++) mism[j][p] += __builtin_popcountll(ip[p] ^ wp[j]);
            }
}

/* The kernels with scalar epilogues (portable, AVX2): one call per block of PX pixels x BLOCK channels
 * counts the mismatches, bin_epilogue turns them into outputs. */
static void bconv_blocks(const Stage *s, const uint64_t *in, void *out, MismatchCount count) {
    const int64_t nblocks = s->cout_pad / BLOCK;
    uint64_t bits[PX][MAXWORDS];
    int64_t mism[BLOCK][PX];
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += PX) {
            const int64_t np = s->wo - x0 < PX ? s->wo - x0 : PX;
            clear_bits(s, bits);
            for (int64_t ob = 0; ob < nblocks; ob++) {
                count(s, in, y, x0, np, ob, mism);
                bin_epilogue(s, (const int64_t(*)[PX])mism, ob, np, y, x0, out, bits);
            }
            finish_bits(s, bits, np, y, x0, out);
        }
}

#if defined(BF_X86)
#define AVX512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq,avx512vbmi2"

/* The lanes of a 16-wide step that hold one of the n remaining channels. */
static inline __mmask16 lanes16(int64_t n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

/* The signs of an affine (a BatchNorm before a binary layer) of 16 channels' values from o0. */
__attribute__((target(AVX512))) static inline __mmask16 signs16(const float *scale, const float *shift, int64_t relu,
                                                                __m512 v, int64_t o0, __mmask16 valid) {
    if (relu) return valid;
    const __m512 a = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(valid, scale + o0)),
                                   _mm512_maskz_loadu_ps(valid, shift + o0));
    return _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GE_OQ) & valid;
}

/* The same for a stage's fused affine. */
__attribute__((target(AVX512))) static inline __mmask16 affine_sign16(const Stage *s, __m512 v, int64_t o0,
                                                                      __mmask16 valid) {
    return signs16(s->aff_scale, s->aff_shift, s->aff_relu, v, o0, valid);
}

/* The bits in which 8 pixels' input words differ from one weight word (an embedded broadcast). */
__attribute__((target(AVX512), always_inline)) static inline __m512i mismatches8(__m512i v, uint64_t weight) {
    return _mm512_popcnt_epi64(_mm512_xor_si512(v, _mm512_set1_epi64((long long)weight)));
}

/* The fast path: 16 accumulators of 8 pixels; each input load is reused by 16 output channels and
 * each weight word is an embedded broadcast of the XOR. The accumulators start at their bias (per
 * pixel in blocks that touch the padding, see Stage.bias), so each channel's output is its count's
 * sign bit, shifted into the block's word by one concatenating shift (VPSHLDQ) per channel. Only for
 * sign-bit outputs (see bconv). KH, KW and WORDS are the stage's, or 0 where they are read at run time: the common
 * shapes get their tap loops unrolled. */
__attribute__((target(AVX512), always_inline)) static inline void bconv_bits_body(const Stage *s, const uint64_t *in,
                                                                                  void *out, const int64_t KH,
                                                                                  const int64_t KW, const int64_t WORDS) {
    const int64_t kh = KH ? KH : s->kh, kw = KW ? KW : s->kw, words = WORDS ? WORDS : s->words;
    const uint64_t *weight = (const uint64_t *)s->weight;
    const int64_t nblocks = s->cout_pad / BLOCK, taps = kh * kw * words, nwords = (s->cout + 63) / 64;
    const int64_t cp = s->cout_pad, fix_w = s->fix_w, in_row = s->in_row, in_plane = s->in_plane;
    const int64_t *bias = s->bias, *flipped = bias + cp;
    const int64_t nxblocks = (s->wo + PX - 1) / PX;
    __m512i packed[MAXWORDS];
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += PX) {
            const int64_t np = s->wo - x0 < PX ? s->wo - x0 : PX;
            const __mmask8 valid = (__mmask8)((1u << np) - 1);
            const int64_t *fix = NULL; /* this block's biases, [cout_pad][fix_w] from x0 */
            if (s->fix_bias && s->fix_block[s->row_class[y] * nxblocks + x0 / PX])
                fix = s->fix_bias + s->row_class[y] * cp * fix_w + x0;
            for (int64_t w = 0; w < nwords; w++) packed[w] = _mm512_setzero_si512();
            for (int64_t ob = 0; ob < nblocks; ob++) {
                const int64_t o0 = ob * BLOCK;
                __m512i acc[BLOCK];
                const uint64_t *wp = weight + ob * taps * BLOCK;
                /* the first word of the first tap starts each count at its bias, which the ADD takes
                 * as a memory operand (a broadcast for the common bias) rather than a separate load */
                const __m512i v0 = _mm512_loadu_si512((const void *)(in + s->in_off + y * in_row + x0));
                if (fix) {
#pragma GCC unroll 16
                    for (int j = 0; j < BLOCK; j++)
                        acc[j] = _mm512_add_epi64(_mm512_loadu_si512((const void *)(fix + (o0 + j) * fix_w)),
                                                  mismatches8(v0, wp[j]));
                } else {
#pragma GCC unroll 16
                    for (int j = 0; j < BLOCK; j++)
                        acc[j] = _mm512_add_epi64(_mm512_set1_epi64(bias[o0 + j]), mismatches8(v0, wp[j]));
                }
                wp += BLOCK;
                for (int64_t ky = 0; ky < kh; ky++) {
                    const uint64_t *row = in + s->in_off + (y + ky) * in_row + x0;
                    /* taps and words stay loops: unrolled, the compiler hoists their loads
                     * and spills accumulators */
#pragma GCC unroll 1
                    for (int64_t kx = 0; kx < kw; kx++)
#pragma GCC unroll 1
                        for (int64_t w = (ky == 0 && kx == 0); w < words; w++, wp += BLOCK) {
                            const __m512i v = _mm512_loadu_si512((const void *)(row + w * in_plane + kx));
#pragma GCC unroll 16
                            for (int j = 0; j < BLOCK; j++) acc[j] = _mm512_add_epi64(acc[j], mismatches8(v, wp[j]));
                        }
                }
                /* unrolled over all 16 channels, so acc stays in registers; channel 15 enters first, so
                 * bit j of `word` is channel o0 + j; then the flipped channels, and into place */
                __m512i high = _mm512_setzero_si512(), word = _mm512_setzero_si512(); /* two chains of 8 */
#pragma GCC unroll 8
                for (int j = BLOCK / 2 - 1; j >= 0; j--) {
                    high = _mm512_shldi_epi64(high, acc[j + BLOCK / 2], 1);
                    word = _mm512_shldi_epi64(word, acc[j], 1);
                }
                word = _mm512_or_si512(word, _mm512_slli_epi64(high, BLOCK / 2));
                word = _mm512_xor_si512(word, _mm512_set1_epi64(flipped[ob]));
                word = _mm512_slli_epi64(word, o0 & 63);
                packed[ob * BLOCK / 64] = _mm512_or_si512(packed[ob * BLOCK / 64], word);
            }
            uint64_t *o = (uint64_t *)out + s->out_off + y * s->out_row + x0;
            for (int64_t w = 0; w < nwords; w++) _mm512_mask_storeu_epi64(o + w * s->out_plane, valid, packed[w]);
        }
}

/* A kernel body instantiated with constant arguments as a function of its own: in one dispatcher
 * with its siblings, register allocation across them spilled accumulators to the stack. */
#define AVX512_VARIANT(NAME, BODY, ...)                                                                        \
    __attribute__((target(AVX512), noinline)) static void NAME(const Stage *s, const uint64_t *in, void *out) { \
        BODY(s, in, out, __VA_ARGS__);                                                                          \
    }
/* one per common shape; 1x1 keeps its word loop a loop (see bconv_bits_body) */
AVX512_VARIANT(bconv_bits_3x3_1word, bconv_bits_body, 3, 3, 1)
AVX512_VARIANT(bconv_bits_3x3_2words, bconv_bits_body, 3, 3, 2)
AVX512_VARIANT(bconv_bits_3x3, bconv_bits_body, 3, 3, 0)
AVX512_VARIANT(bconv_bits_1x1, bconv_bits_body, 1, 1, 0)
AVX512_VARIANT(bconv_bits_any, bconv_bits_body, 0, 0, 0)

__attribute__((target(AVX512))) static void bconv_avx512_bits(const Stage *s, const uint64_t *in, void *out) {
    if (s->kh == 3 && s->kw == 3) {
        if (s->words == 1) return bconv_bits_3x3_1word(s, in, out);
        if (s->words == 2) return bconv_bits_3x3_2words(s, in, out);
        return bconv_bits_3x3(s, in, out);
    }
    if (s->kh == 1 && s->kw == 1) return bconv_bits_1x1(s, in, out);
    bconv_bits_any(s, in, out);
}

/* The channel-vectorized kernels' epilogue: 16 output channels (o0...) of one pixel at a time, so
 * results leave in the HWC order of the float buffers (a vector epilogue, no transposes). */
typedef struct {
    int64_t o0;
    __mmask16 valid;
    __m512i k;
    __m512 scale, shift, aff_scale, aff_shift;
} Block16;

__attribute__((target(AVX512))) static inline Block16 block16(const Stage *s, int64_t o0) {
    Block16 b;
    b.o0 = o0;
    b.valid = lanes16(s->cout - o0);
    b.k = _mm512_set1_epi32((int)(s->cin * s->kh * s->kw));
    b.scale = _mm512_maskz_loadu_ps(b.valid, s->scale + o0);
    b.shift = _mm512_maskz_loadu_ps(b.valid, s->shift + o0);
    b.aff_scale = s->aff_out ? _mm512_maskz_loadu_ps(b.valid, s->aff_scale + o0) : b.scale;
    b.aff_shift = s->aff_out ? _mm512_maskz_loadu_ps(b.valid, s->aff_shift + o0) : b.shift;
    return b;
}

/* The integer dot products of 16 channels of one pixel from their mismatch counts (fix: that
 * pixel's padding corrections, or NULL). */
__attribute__((target(AVX512))) static inline __m512i dot16(const Block16 *b, __m512i mism, const int32_t *fix) {
    __m512i dot = _mm512_sub_epi32(b->k, _mm512_slli_epi32(mism, 1));
    return fix ? _mm512_sub_epi32(dot, _mm512_loadu_si512((const void *)fix)) : dot;
}

/* The float value of 16 channels: dot * scale + shift, ReLU, plus the fused residual (in2 or NULL). */
__attribute__((target(AVX512))) static inline __m512 value16(const Block16 *b, __m512i dot, int relu, const float *in2) {
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), b->scale), b->shift);
    if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    return in2 ? _mm512_add_ps(_mm512_maskz_loadu_ps(b->valid, in2), v) : v;
}

/* The fused affine's sign bits of 16 channels' values. */
__attribute__((target(AVX512))) static inline __mmask16 aff_signs16(const Block16 *b, __m512 v, int aff_relu) {
    if (aff_relu) return b->valid;
    const __m512 a = _mm512_add_ps(_mm512_mul_ps(v, b->aff_scale), b->aff_shift);
    return _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GE_OQ) & b->valid;
}

/* The popcount mismatches of PX pixels x 16 channels (block ob) at (y, x0), 64-bit words: two 8 x int64
 * registers per pixel, each weight vector load reused by PX pixels, each input word a broadcast. */
__attribute__((target(AVX512), always_inline)) static inline void mismatches_wide(const Stage *s, const uint64_t *in,
                                                                                  int64_t y, int64_t x0, int64_t ob,
                                                                                  __m512i mism[PX]) {
    const int64_t taps = s->kh * s->kw * s->words;
    const uint64_t *wp = (const uint64_t *)s->weight + ob * taps * BLOCK;
    __m512i acc[PX][2];
#pragma GCC unroll 8
    for (int p = 0; p < PX; p++) acc[p][0] = acc[p][1] = _mm512_setzero_si512();
    for (int64_t ky = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++)
            for (int64_t w = 0; w < s->words; w++, wp += BLOCK) {
                const uint64_t *ip = in + s->in_off + w * s->in_plane + (y + ky) * s->in_row + x0 + kx;
                const __m512i w0 = _mm512_loadu_si512((const void *)wp);
                const __m512i w1 = _mm512_loadu_si512((const void *)(wp + 8));
#pragma GCC unroll 8
                for (int p = 0; p < PX; p++) {
                    const __m512i v = _mm512_set1_epi64((long long)ip[p]);
                    acc[p][0] = _mm512_add_epi64(acc[p][0], _mm512_popcnt_epi64(_mm512_xor_si512(v, w0)));
                    acc[p][1] = _mm512_add_epi64(acc[p][1], _mm512_popcnt_epi64(_mm512_xor_si512(v, w1)));
                }
            }
#pragma GCC unroll 8
    for (int p = 0; p < PX; p++) /* the two halves narrowed to 16 x int32 (|dot| < 2^31) */
        mism[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(acc[p][0])),
                                     _mm512_cvtepi64_epi32(acc[p][1]), 1);
}

/* The same for narrow inputs (at most 32 channels: the high half of every input word is 0): 32-bit
 * lanes, so one register holds 16 channels' weights (narrowed once, at plan build) and each pixel's
 * word is one 32-bit broadcast: half the instructions, none spent on empty bits. */
__attribute__((target(AVX512), always_inline)) static inline void mismatches_narrow(const Stage *s, const uint64_t *in,
                                                                                    int64_t y, int64_t x0, int64_t ob,
                                                                                    __m512i mism[PX], const int32_t *init,
                                                                                    int64_t step) {
    const uint32_t *wp = s->weight32 + ob * s->kh * s->kw * BLOCK;
#pragma GCC unroll 8
    for (int p = 0; p < PX; p++) /* counts start at 0, or at pixel p's `init` (step ints apart) */
        mism[p] = init ? _mm512_loadu_si512((const void *)(init + p * step)) : _mm512_setzero_si512();
    for (int64_t ky = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++, wp += BLOCK) {
            const int32_t *ip = (const int32_t *)(in + s->in_off + (y + ky) * s->in_row + x0 + kx);
            const __m512i w = _mm512_loadu_si512((const void *)wp);
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++) /* the low half of word p */
                mism[p] = _mm512_add_epi32(mism[p], _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32(ip[2 * p]), w)));
        }
}

/* Channel-vectorized: registers hold 16 output channels of one pixel, for float outputs and narrow
 * inputs (see bconv); narrow inputs take the 32-bit lanes. The stage's fields are read once (stores
 * through `out` could alias them otherwise) and the fusions (residual sum, 2x2 max-pool, following
 * sign) are constants of each instance, so the per-pixel epilogue is vector work and pointer steps. */
__attribute__((target(AVX512), always_inline)) static inline void bconv_channels_body(const Stage *s, const uint64_t *in,
                                                                                     void *out, const int has_in2,
                                                                                     const int pool, const int aff) {
    const int64_t nblocks = s->cout_pad / BLOCK, ho = s->ho, wo = s->wo, cout_pad = s->cout_pad;
    const int64_t out_row = s->out_row, out_pix = s->out_pix, in2_row = s->in2_row, in2_pix = s->in2_pix;
    const int relu = (int)s->relu, aff_relu = (int)s->aff_relu, bits_out = s->out_mode == OUT_BITS;
    const int32_t *fix_table = s->fix;
    float *const fout = (float *)out + s->out_off;
    const float *const in2 = has_in2 ? s->in2 + s->in2_off : NULL;
    uint64_t bits[PX][MAXWORDS];
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x0 = 0; x0 < wo; x0 += PX) {
            const int64_t np = wo - x0 < PX ? wo - x0 : PX;
            if (bits_out || aff) clear_bits(s, bits);
            for (int64_t ob = 0; ob < nblocks; ob++) {
                const int64_t o0 = ob * BLOCK, word = o0 >> 6, shift = o0 & 63;
                __m512i mism[PX];
                if (bits_out) { /* narrow: counts from -base, one unsigned compare with span (Stage.range32) */
                    const int32_t *range = s->fix_range32 ? s->fix_range32 + (s->row_class[y] * s->fix_w + x0) * 2 * cout_pad + o0
                                                          : s->range32 + o0;
                    const int64_t step = s->fix_range32 ? 2 * cout_pad : 0;
                    mismatches_narrow(s, in, y, x0, ob, mism, range, step);
                    /* p runs to PX, unrolled, with a break: constant indices keep mism[] in registers
                     * (a loop to np put it on the stack), here and in the epilogues below */
#pragma GCC unroll 8
                    for (int p = 0; p < PX; p++) {
                        if (p >= np) break;
                        const __m512i span = _mm512_loadu_si512((const void *)(range + p * step + cout_pad));
                        bits[p][word] |= (uint64_t)_mm512_cmple_epu32_mask(mism[p], span) << shift;
                    }
                    continue;
                }
                if (s->weight32)
                    mismatches_narrow(s, in, y, x0, ob, mism, NULL, 0);
                else
                    mismatches_wide(s, in, y, x0, ob, mism);
                const Block16 b = block16(s, o0);
                const int32_t *fix = fix_table ? padding_fix_row(s, y, x0) + o0 : NULL; /* pixels cout_pad apart */
                const float *r2 = has_in2 ? in2 + y * in2_row + x0 * in2_pix + o0 : NULL;
                if (pool) { /* pixel pairs in registers, then the window's other row in memory */
                    float *dst = fout + (y >> 1) * out_row + (x0 >> 1) * out_pix + o0;
#pragma GCC unroll 4
                    for (int p = 0; p < PX; p += 2, dst += out_pix) {
                        if (p >= np) break;
                        const __m512 v0 = value16(&b, dot16(&b, mism[p], fix ? fix + p * cout_pad : NULL), relu,
                                                  has_in2 ? r2 + p * in2_pix : NULL);
                        const __m512 v1 = value16(&b, dot16(&b, mism[p + 1], fix ? fix + (p + 1) * cout_pad : NULL),
                                                  relu, has_in2 ? r2 + (p + 1) * in2_pix : NULL);
                        __m512 v = _mm512_max_ps(v1, v0);
                        if (y & 1) v = _mm512_max_ps(_mm512_maskz_loadu_ps(b.valid, dst), v);
                        _mm512_mask_storeu_ps(dst, b.valid, v);
                        if (aff && (y & 1)) bits[p >> 1][word] |= (uint64_t)aff_signs16(&b, v, aff_relu) << shift;
                    }
                    continue;
                }
                float *dst = fout + y * out_row + x0 * out_pix + o0;
#pragma GCC unroll 8
                for (int p = 0; p < PX; p++, dst += out_pix) {
                    if (p >= np) break;
                    const __m512 v = value16(&b, dot16(&b, mism[p], fix ? fix + p * cout_pad : NULL), relu,
                                             has_in2 ? r2 + p * in2_pix : NULL);
                    _mm512_mask_storeu_ps(dst, b.valid, v);
                    if (aff) bits[p][word] |= (uint64_t)aff_signs16(&b, v, aff_relu) << shift;
                }
            }
            finish_bits(s, bits, np, y, x0, out);
        }
}

/* one per fusion */
AVX512_VARIANT(bconv_channels_plain, bconv_channels_body, 0, 0, 0)
AVX512_VARIANT(bconv_channels_aff, bconv_channels_body, 0, 0, 1)
AVX512_VARIANT(bconv_channels_in2, bconv_channels_body, 1, 0, 0)
AVX512_VARIANT(bconv_channels_in2_aff, bconv_channels_body, 1, 0, 1)
AVX512_VARIANT(bconv_channels_pool, bconv_channels_body, 0, 1, 0)
AVX512_VARIANT(bconv_channels_pool_aff, bconv_channels_body, 0, 1, 1)
AVX512_VARIANT(bconv_channels_in2_pool, bconv_channels_body, 1, 1, 0)
AVX512_VARIANT(bconv_channels_in2_pool_aff, bconv_channels_body, 1, 1, 1)

__attribute__((target(AVX512))) static void bconv_avx512_channels(const Stage *s, const uint64_t *in, void *out) {
    const int in2 = s->in2 != NULL, aff = s->aff_out != NULL;
    switch ((s->pool ? 4 : 0) | (in2 ? 2 : 0) | aff) {
    case 0: return bconv_channels_plain(s, in, out);
    case 1: return bconv_channels_aff(s, in, out);
    case 2: return bconv_channels_in2(s, in, out);
    case 3: return bconv_channels_in2_aff(s, in, out);
    case 4: return bconv_channels_pool(s, in, out);
    case 5: return bconv_channels_pool_aff(s, in, out);
    case 6: return bconv_channels_in2_pool(s, in, out);
    default: return bconv_channels_in2_pool_aff(s, in, out);
    }
}
/* ------------------------------------------------------------------------------------------- */
/* AVX2: binary convolution, channel-vectorized as the AVX-512 channel kernels (registers hold 8 output
 * channels of one pixel, so results leave in HWC order through a vector epilogue). AVX2 has no vector
 * popcount: a nibble table (VPSHUFB) counts the bits of each half-byte, and the byte counts add up over
 * up to BYTE_TAPS tap words before they are widened, once per chunk of taps. Both operands come split
 * into their nibbles beforehand (the weights once, the input words once per run: Stage.nib_*), so a
 * count costs two XORs, two lookups and two ADDs (6 vector operations for 256 binary MACs, against 8
 * when each XOR result is split). */
#define AVX2 "avx2,fma"
#define BYTE_TAPS 31 /* a byte of counts gains at most 8 per tap word: 31 x 8 < 256 */

#define STACK_TAPS 1024 /* tap words whose offsets fit on the stack (3 x 3 up to 7,281 channels) */

/* The words' offsets of a binary conv's taps, in weight order ((ky, kx, word)), from a pixel's first
 * word: in `room` (STACK_TAPS long) or, for larger kernels, in memory the caller frees (NULL: none). */
static int64_t *tap_offsets(const Stage *s, int64_t *room) {
    const int64_t n = s->kh * s->kw * s->words;
    int64_t *offs = n <= STACK_TAPS ? room : malloc(sizeof(int64_t) * (size_t)n);
    if (!offs) return NULL;
    for (int64_t ky = 0, t = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++)
            for (int64_t w = 0; w < s->words; w++) offs[t++] = w * s->in_plane + ky * s->in_row + kx;
    return offs;
}

__attribute__((target(AVX2))) static inline __m256i nibble_table(void) {
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3,
                            4);
}

/* ACC plus the byte counts of a ^ w for one pixel: a's nibble words (at LO and HI: a 64-, 32- or 16-bit
 * word each, which BROADCAST repeats across the register) XORed with w's (W_LO, W_HI, Stage.nib_weight)
 * index the count table directly, where counting a ^ w whole would also shift and mask it. One asm
 * block in two scratch registers: from intrinsics, GCC hoisted every pixel's broadcasts ahead, ran
 * out of the 16 registers and kept three of the 8 accumulators on the stack (a load and a store each
 * per tap). */
#define ADD_COUNTS_ASM(BROADCAST, TYPE, ACC, LO, HI, W_LO, W_HI, TABLE)                                         \
    do {                                                                                                      \
        __m256i t1_, t2_;                                                                                     \
        __asm__(BROADCAST " %[lo], %[t1]\n\t" BROADCAST " %[hi], %[t2]\n\t"                                   \
                "vpxor %[wl], %[t1], %[t1]\n\tvpxor %[wh], %[t2], %[t2]\n\t"                                    \
                "vpshufb %[t1], %[tab], %[t1]\n\tvpshufb %[t2], %[tab], %[t2]\n\t"                              \
                "vpaddb %[t2], %[t1], %[t1]\n\tvpaddb %[t1], %[acc], %[acc]"                                   \
                : [acc] "+x"(ACC), [t1] "=&x"(t1_), [t2] "=&x"(t2_)                                             \
                : [lo] "m"(*(const TYPE *)(LO)), [hi] "m"(*(const TYPE *)(HI)), [wl] "x"(W_LO), [wh] "x"(W_HI), \
                  [tab] "x"(TABLE));                                                                          \
    } while (0)

/* Popcount mismatches of PX pixels x 16 channels (block ob) at (y, x0) into mism[pixel][channel], from
 * the input's nibble words (lo, hi: Stage.nib_in, from the input's in_off) and the weights' nibbles.
 * Narrow inputs (at most 32 channels, s->weight32): 8 channels' 32-bit weight words per register, each
 * pixel's low half-word a broadcast; at most 16 channels: all 16 channels' 16-bit words in one register.
 * Wide: 4 channels' 64-bit words per register. Each weight load serves PX pixels; all PX are counted
 * (rows have slack), the epilogue keeps np. */
__attribute__((target(AVX2))) static void mismatches_avx2(const Stage *s, const uint64_t *lo, const uint64_t *hi,
                                                          const int64_t *offs, int64_t y, int64_t x0, int64_t ob,
                                                          int32_t mism[PX][BLOCK]) {
    const __m256i table = nibble_table(), zero = _mm256_setzero_si256();
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const int64_t at = y * s->in_row + x0;
    const uint64_t *base_lo = lo + at, *base_hi = hi + at;
    const int narrow = s->weight32 != NULL;
    const int64_t n = s->kh * s->kw * s->words, lanes = narrow ? 8 : 4; /* channels per register */
    const int64_t nw = n * s->cout_pad;                                 /* low words, then high words */
    if (narrow && s->cin <= 16) { /* 16-bit lanes: one register holds all 16 channels' weights */
        for (int64_t t0 = 0; t0 < n; t0 += BYTE_TAPS) {
            const int64_t t1 = n - t0 < BYTE_TAPS ? n : t0 + BYTE_TAPS;
            __m256i acc[PX];
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++) acc[p] = zero;
            const uint16_t *wp = (const uint16_t *)s->nib_weight + (ob * n + t0) * BLOCK; /* split_nibbles */
            for (int64_t t = t0; t < t1; t++, wp += BLOCK) {
                const __m256i w_lo = _mm256_loadu_si256((const __m256i *)wp);
                const __m256i w_hi = _mm256_loadu_si256((const __m256i *)(wp + nw));
                const uint64_t *ip_lo = base_lo + offs[t], *ip_hi = base_hi + offs[t]; /* each word's low 16 bits */
#pragma GCC unroll 8
                for (int p = 0; p < PX; p++)
                    ADD_COUNTS_ASM("vpbroadcastw", uint16_t, acc[p], ip_lo + p, ip_hi + p, w_lo, w_hi, table);
            }
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++) {
                const __m256i c = _mm256_maddubs_epi16(acc[p], ones8); /* 16 channels' counts, 16 bits each */
                __m256i c_lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(c));
                __m256i c_hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(c, 1));
                if (t0) {
                    c_lo = _mm256_add_epi32(c_lo, _mm256_loadu_si256((const __m256i *)&mism[p][0]));
                    c_hi = _mm256_add_epi32(c_hi, _mm256_loadu_si256((const __m256i *)&mism[p][8]));
                }
                _mm256_storeu_si256((__m256i *)&mism[p][0], c_lo);
                _mm256_storeu_si256((__m256i *)&mism[p][8], c_hi);
            }
        }
        return;
    }
    for (int64_t c0 = 0; c0 < BLOCK; c0 += lanes)
        for (int64_t t0 = 0; t0 < n; t0 += BYTE_TAPS) {
            const int64_t t1 = n - t0 < BYTE_TAPS ? n : t0 + BYTE_TAPS;
            __m256i acc[PX];
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++) acc[p] = zero;
            if (narrow) {
                const uint32_t *wp = (const uint32_t *)s->nib_weight + (ob * n + t0) * BLOCK + c0;
                for (int64_t t = t0; t < t1; t++, wp += BLOCK) {
                    const __m256i w_lo = _mm256_loadu_si256((const __m256i *)wp);
                    const __m256i w_hi = _mm256_loadu_si256((const __m256i *)(wp + nw));
                    const uint64_t *ip_lo = base_lo + offs[t], *ip_hi = base_hi + offs[t]; /* each word's low half */
#pragma GCC unroll 8
                    for (int p = 0; p < PX; p++)
                        ADD_COUNTS_ASM("vpbroadcastd", uint32_t, acc[p], ip_lo + p, ip_hi + p, w_lo, w_hi, table);
                }
            } else {
                const uint64_t *wp = (const uint64_t *)s->nib_weight + (ob * n + t0) * BLOCK + c0;
                for (int64_t t = t0; t < t1; t++, wp += BLOCK) {
                    const __m256i w_lo = _mm256_loadu_si256((const __m256i *)wp);
                    const __m256i w_hi = _mm256_loadu_si256((const __m256i *)(wp + nw));
                    const uint64_t *ip_lo = base_lo + offs[t], *ip_hi = base_hi + offs[t];
#pragma GCC unroll 8
                    for (int p = 0; p < PX; p++)
                        ADD_COUNTS_ASM("vpbroadcastq", uint64_t, acc[p], ip_lo + p, ip_hi + p, w_lo, w_hi, table);
                }
            }
#pragma GCC unroll 8
            for (int p = 0; p < PX; p++) {
                int32_t *m = &mism[p][c0];
                if (narrow) { /* the four bytes of each 32-bit lane */
                    __m256i c = _mm256_madd_epi16(_mm256_maddubs_epi16(acc[p], ones8), ones16);
                    if (t0) c = _mm256_add_epi32(c, _mm256_loadu_si256((const __m256i *)m));
                    _mm256_storeu_si256((__m256i *)m, c);
                } else { /* the eight bytes of each 64-bit lane, narrowed to 32 bits */
                    __m128i c = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_sad_epu8(acc[p], zero), evens));
                    if (t0) c = _mm_add_epi32(c, _mm_loadu_si128((const __m128i *)m));
                    _mm_storeu_si128((__m128i *)m, c);
                }
            }
        }
}

/* The nibble words (Stage.nib_in) of the input words a run reads. */
__attribute__((target(AVX2))) static void split_input_avx2(const Stage *s, const uint64_t *in) {
    split_nibble_words(in + s->in_off, s->nib_len, s->nib_in, s->nib_in + s->nib_len);
}

/* The constants of 8 output channels (o0...) of a binary conv's epilogue. */
typedef struct {
    int64_t n; /* channels: 8, or fewer in the last block */
    int mask;  /* the lanes that hold channels */
    __m256i lanes, k, lo, hi;
    __m256 scale, shift, aff_scale, aff_shift;
} Block8;

__attribute__((target(AVX2))) static inline __m256i lanes8(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 8 floats from p: all of them, or the lanes' (n < 8 channels left). */
__attribute__((target(AVX2))) static inline __m256 load8(const float *p, int64_t n, __m256i lanes) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes);
}

__attribute__((target(AVX2))) static inline void put8(float *p, int64_t n, __m256i lanes, __m256 v) {
    if (n >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, lanes, v);
}

__attribute__((target(AVX2))) static inline Block8 block8(const Stage *s, int64_t o0) {
    Block8 b;
    const int64_t n = s->cout - o0 < 8 ? s->cout - o0 : 8;
    b.n = n;
    b.mask = (1 << n) - 1;
    b.lanes = lanes8(n);
    b.k = _mm256_set1_epi32((int)(s->cin * s->kh * s->kw));
    if (s->out_mode == OUT_BITS) {
        b.lo = _mm256_maskload_epi32(s->lo + o0, b.lanes);
        b.hi = _mm256_maskload_epi32(s->hi + o0, b.lanes);
        return b;
    }
    b.scale = _mm256_maskload_ps(s->scale + o0, b.lanes);
    b.shift = _mm256_maskload_ps(s->shift + o0, b.lanes);
    if (s->aff_out) {
        b.aff_scale = _mm256_maskload_ps(s->aff_scale + o0, b.lanes);
        b.aff_shift = _mm256_maskload_ps(s->aff_shift + o0, b.lanes);
    }
    return b;
}

/* The signs (v * scale + shift >= 0) of 8 channels as a byte. */
__attribute__((target(AVX2))) static inline int signs8(__m256 v, __m256 scale, __m256 shift, int mask) {
    const __m256 a = _mm256_add_ps(_mm256_mul_ps(v, scale), shift);
    return _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GE_OQ)) & mask;
}

/* The value of 8 channels from their mismatch counts (fix: the pixel's padding corrections or NULL),
 * as bin_epilogue computes it: dot * scale + shift, ReLU, plus the residual r2 (or NULL). */
__attribute__((target(AVX2))) static inline __m256 value8(const Block8 *b, const int32_t *mism, const int32_t *fix,
                                                          int relu, const float *r2) {
    __m256i dot = _mm256_sub_epi32(b->k, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)mism), 1));
    if (fix) dot = _mm256_sub_epi32(dot, _mm256_loadu_si256((const __m256i *)fix));
    __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), b->scale), b->shift);
    if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (!r2) return v;
    return _mm256_add_ps(load8(r2, b->n, b->lanes), v);
}

/* As bconv_channels_body: the stage's fields read once (stores through `out` could alias them, and
 * the compiler would reload them per pixel) and the fusions constants of each instance. */
__attribute__((target(AVX2), always_inline)) static inline void bconv_avx2_body(const Stage *s, const uint64_t *in,
                                                                              void *out, const int64_t *offs,
                                                                              const int bits_out, const int has_in2,
                                                                              const int pool, const int aff) {
    const int64_t nblocks = s->cout_pad / BLOCK, cout_pad = s->cout_pad, cout = s->cout, ho = s->ho, wo = s->wo;
    const int64_t out_row = s->out_row, out_pix = s->out_pix, in2_row = s->in2_row, in2_pix = s->in2_pix;
    const int relu = (int)s->relu, aff_relu = (int)s->aff_relu;
    const int32_t *const fix_table = s->fix;
    float *const fout = (float *)out + s->out_off;
    const float *const in2 = has_in2 ? s->in2 + s->in2_off : NULL;
    uint64_t bits[PX][MAXWORDS];
    int32_t mism[PX][BLOCK];
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x0 = 0; x0 < wo; x0 += PX) {
            const int64_t np = wo - x0 < PX ? wo - x0 : PX;
            if (bits_out || aff) clear_bits(s, bits);
            const int32_t *const fix_row = fix_table ? padding_fix_row(s, y, x0) : NULL; /* pixels cout_pad apart */
            for (int64_t ob = 0; ob < nblocks; ob++) {
                mismatches_avx2(s, s->nib_in, s->nib_in + s->nib_len, offs, y, x0, ob, mism);
                for (int64_t o0 = ob * BLOCK; o0 < ob * BLOCK + BLOCK && o0 < cout; o0 += 8) {
                    const Block8 b = block8(s, o0);
                    const int64_t c = o0 - ob * BLOCK, word = o0 >> 6, shift = o0 & 63;
                    const int32_t *fix = fix_row ? fix_row + o0 : NULL;
                    const float *r2 = has_in2 ? in2 + y * in2_row + x0 * in2_pix + o0 : NULL;
                    if (bits_out) { /* on <=> lo <= dot <= hi */
                        for (int64_t p = 0; p < np; p++) {
                            __m256i dot = _mm256_sub_epi32(
                                b.k, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)&mism[p][c]), 1));
                            if (fix) dot = _mm256_sub_epi32(dot, _mm256_loadu_si256((const __m256i *)(fix + p * cout_pad)));
                            const __m256i off = _mm256_or_si256(_mm256_cmpgt_epi32(b.lo, dot), _mm256_cmpgt_epi32(dot, b.hi));
                            const int on = ~_mm256_movemask_ps(_mm256_castsi256_ps(off)) & b.mask;
                            bits[p][word] |= (uint64_t)on << shift;
                        }
                        continue;
                    }
                    if (pool) { /* pixel pairs in registers, then the window's other row in memory */
                        float *dst = fout + (y >> 1) * out_row + (x0 >> 1) * out_pix + o0;
                        for (int64_t p = 0; p < np; p += 2, dst += out_pix) {
                            const __m256 v0 = value8(&b, &mism[p][c], fix ? fix + p * cout_pad : NULL, relu,
                                                     has_in2 ? r2 + p * in2_pix : NULL);
                            const __m256 v1 = value8(&b, &mism[p + 1][c], fix ? fix + (p + 1) * cout_pad : NULL, relu,
                                                     has_in2 ? r2 + (p + 1) * in2_pix : NULL);
                            __m256 v = _mm256_max_ps(v1, v0);
                            if (y & 1) v = _mm256_max_ps(load8(dst, b.n, b.lanes), v);
                            put8(dst, b.n, b.lanes, v);
                            if (aff && (y & 1))
                                bits[p >> 1][word] |=
                                    (uint64_t)(aff_relu ? b.mask : signs8(v, b.aff_scale, b.aff_shift, b.mask)) << shift;
                        }
                        continue;
                    }
                    float *dst = fout + y * out_row + x0 * out_pix + o0;
                    for (int64_t p = 0; p < np; p++, dst += out_pix) {
                        const __m256 v = value8(&b, &mism[p][c], fix ? fix + p * cout_pad : NULL, relu,
                                                has_in2 ? r2 + p * in2_pix : NULL);
                        put8(dst, b.n, b.lanes, v);
                        if (aff)
                            bits[p][word] |= (uint64_t)(aff_relu ? b.mask : signs8(v, b.aff_scale, b.aff_shift, b.mask))
                                             << shift;
                    }
                }
            }
            finish_bits(s, bits, np, y, x0, out);
        }
}

#define AVX2_VARIANT(NAME, ...)                                                                              \
    __attribute__((target(AVX2), noinline)) static void NAME(const Stage *s, const uint64_t *in, void *out, \
                                                             const int64_t *offs) {                         \
        bconv_avx2_body(s, in, out, offs, __VA_ARGS__);                                                      \
    }
/* one per fusion, as the AVX-512 channel kernels */
AVX2_VARIANT(bconv_avx2_bits, 1, 0, 0, 0)
AVX2_VARIANT(bconv_avx2_plain, 0, 0, 0, 0)
AVX2_VARIANT(bconv_avx2_aff, 0, 0, 0, 1)
AVX2_VARIANT(bconv_avx2_in2, 0, 1, 0, 0)
AVX2_VARIANT(bconv_avx2_in2_aff, 0, 1, 0, 1)
AVX2_VARIANT(bconv_avx2_pool, 0, 0, 1, 0)
AVX2_VARIANT(bconv_avx2_pool_aff, 0, 0, 1, 1)
AVX2_VARIANT(bconv_avx2_in2_pool, 0, 1, 1, 0)
AVX2_VARIANT(bconv_avx2_in2_pool_aff, 0, 1, 1, 1)

__attribute__((target(AVX2))) static void bconv_avx2(const Stage *s, const uint64_t *in, void *out) {
    int64_t room[STACK_TAPS];
    int64_t *offs = tap_offsets(s, room);
    if (!offs) return bconv_blocks(s, in, out, mismatches_portable); /* no memory: still exact */
    split_input_avx2(s, in);
    if (s->out_mode == OUT_BITS) {
        bconv_avx2_bits(s, in, out, offs);
    } else {
        switch ((s->pool ? 4 : 0) | (s->in2 ? 2 : 0) | (s->aff_out != NULL)) {
        case 0: bconv_avx2_plain(s, in, out, offs); break;
        case 1: bconv_avx2_aff(s, in, out, offs); break;
        case 2: bconv_avx2_in2(s, in, out, offs); break;
        case 3: bconv_avx2_in2_aff(s, in, out, offs); break;
        case 4: bconv_avx2_pool(s, in, out, offs); break;
        case 5: bconv_avx2_pool_aff(s, in, out, offs); break;
        case 6: bconv_avx2_in2_pool(s, in, out, offs); break;
        default: bconv_avx2_in2_pool_aff(s, in, out, offs); break;
        }
    }
    if (offs != room) free(offs);
}
#endif

static void bconv(const Stage *s, const uint64_t *in, void *out) {
#if defined(BF_X86)
    if (isa_current == ISA_AVX512 && (s->out_mode == OUT_FLOAT || s->weight32))
        return bconv_avx512_channels(s, in, out);
    if (isa_current == ISA_AVX512 && !s->two_sided) return bconv_avx512_bits(s, in, out);
    if (isa_current == ISA_AVX2) return bconv_avx2(s, in, out);
#endif
    bconv_blocks(s, in, out, mismatches_portable);
}

/* ------------------------------------------------------------------------------------------- */
/* Real convolution, float HWC in. Weights: [kh][kw][cin][cout_pad] float. */

/* Float convolution results of PX pixels x BLOCK channels: scale, shift, ReLU; stored, or
 * thresholded into sign bits. */
static void conv_epilogue(const Stage *s, float acc[PX][BLOCK], int64_t ob, int64_t np, int64_t y, int64_t x0,
                          void *out, uint64_t bits[PX][MAXWORDS]) {
    const int64_t nj = s->cout - ob * BLOCK < BLOCK ? s->cout - ob * BLOCK : BLOCK;
    for (int64_t p = 0; p < np; p++)
        for (int64_t j = 0; j < nj; j++) {
            const int64_t o = ob * BLOCK + j;
            float v = acc[p][j] * s->scale[o];
            v = v + s->shift[o];
            if (s->relu && v < 0) v = 0;
            if (s->out_mode == OUT_BITS) {
                if (v >= 0) bits[p][o >> 6] |= (uint64_t)1 << (o & 63);
                continue;
            }
            if (!s->no_store) ((float *)out)[s->out_off + y * s->out_row + (x0 + p) * s->out_pix + o] = v;
            if (s->aff_out) {
                float a = v * s->aff_scale[o];
                a = a + s->aff_shift[o];
                if (a >= 0 || s->aff_relu) bits[p][o >> 6] |= (uint64_t)1 << (o & 63);
            }
            if (s->aff2_out) {
                float a = v * s->aff2_scale[o];
                a = a + s->aff2_shift[o];
                if (a >= 0 || s->aff2_relu) bits[p][(s->cout + 63) / 64 + (o >> 6)] |= (uint64_t)1 << (o & 63);
            }
        }
}

static void conv_f32_portable(const Stage *s, const float *in, void *out) {
    const float *weight = (const float *)s->weight;
    const int64_t nblocks = s->cout_pad / BLOCK, step = s->stride * s->in_pix;
    uint64_t bits[PX][MAXWORDS];
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += PX) {
            const int64_t np = s->wo - x0 < PX ? s->wo - x0 : PX;
            if (s->out_mode == OUT_BITS || s->aff_out) clear_bits(s, bits);
            for (int64_t ob = 0; ob < nblocks; ob++) {
                float acc[PX][BLOCK];
                memset(acc, 0, sizeof acc);
                for (int64_t ky = 0; ky < s->kh; ky++)
                    for (int64_t kx = 0; kx < s->kw; kx++) {
                        const float *ip =
                            in + s->in_off + (y * s->stride + ky) * s->in_row + (x0 * s->stride + kx) * s->in_pix;
                        const float *wp = weight + ((ky * s->kw + kx) * s->cin) * s->cout_pad + ob * BLOCK;
                        for (int64_t c = 0; c < s->cin; c++, wp += s->cout_pad)
                            for (int64_t p = 0; p < np; p++) {
                                const float v = ip[p * step + c];
                                for (int j = 0; j < BLOCK; j++) acc[p][j] += v * wp[j];
                            }
                    }
                conv_epilogue(s, acc, ob, np, y, x0, out, bits);
            }
            finish_bits(s, bits, np, y, x0, out);
        }
}

#if defined(BF_X86)
/* conv_epilogue with 8 channels per register; the stage's fields in locals (as bconv_avx2_body's). */
__attribute__((target(AVX2))) static void conv_epilogue_avx2(const Stage *s, float acc[PX][BLOCK], int64_t ob,
                                                             int64_t np, int64_t y, int64_t x0, void *out,
                                                             uint64_t bits[PX][MAXWORDS]) {
    const int64_t cout = s->cout, second = (cout + 63) / 64; /* the first word of the second fused affine's signs */
    const int relu = (int)s->relu, bits_out = s->out_mode == OUT_BITS, store = !s->no_store;
    const int aff = s->aff_out != NULL, aff2 = s->aff2_out != NULL, aff_relu = (int)s->aff_relu,
              aff2_relu = (int)s->aff2_relu;
    float *const dst = (float *)out + s->out_off + y * s->out_row + x0 * s->out_pix;
    const int64_t out_pix = s->out_pix;
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t o0 = ob * BLOCK; o0 < ob * BLOCK + BLOCK && o0 < cout; o0 += 8) {
        const int64_t n = cout - o0 < 8 ? cout - o0 : 8, word = o0 >> 6, shift = o0 & 63;
        const int mask = (1 << n) - 1;
        const __m256i lanes = lanes8(n);
        const __m256 scale = _mm256_maskload_ps(s->scale + o0, lanes), bias = _mm256_maskload_ps(s->shift + o0, lanes);
        __m256 a_scale = zero, a_shift = zero, b_scale = zero, b_shift = zero;
        if (aff) a_scale = _mm256_maskload_ps(s->aff_scale + o0, lanes), a_shift = _mm256_maskload_ps(s->aff_shift + o0, lanes);
        if (aff2)
            b_scale = _mm256_maskload_ps(s->aff2_scale + o0, lanes), b_shift = _mm256_maskload_ps(s->aff2_shift + o0, lanes);
        for (int64_t p = 0; p < np; p++) {
            __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(&acc[p][o0 - ob * BLOCK]), scale), bias);
            if (relu) v = _mm256_max_ps(v, zero);
            if (bits_out) {
                bits[p][word] |= (uint64_t)(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ)) & mask) << shift;
                continue;
            }
            if (store) put8(dst + p * out_pix + o0, n, lanes, v);
            if (aff) bits[p][word] |= (uint64_t)(aff_relu ? mask : signs8(v, a_scale, a_shift, mask)) << shift;
            if (aff2) bits[p][second + word] |= (uint64_t)(aff2_relu ? mask : signs8(v, b_scale, b_shift, mask)) << shift;
        }
    }
}

/* A tile of NP pixels (from pixel x0 + g) x NR registers of 8 channels (from block ob) of FMA accumulators
 * over all taps. Each weight vector is reused by NP pixels and each input value is a broadcast operand;
 * NP x NR = 12 chains hide the FMA latency (8 did not: 42% of the FP32 peak on the hourglass stem;
 * 8 x 1 serves a last block of at most 8 channels, whose 4 x 2 tile would be half empty). Constant NP,
 * NR and pixel step (`unit`; 0: the stage's) keep the chains in registers and the pixel offsets
 * immediate. Up to NP - 1 pixels past np are computed and dropped: rows read on into the next row, and
 * past the last one into the buffer's slack (PX pixels and two rows). In dense HWC (pix =
 * channels) the taps (kx, c) of one kernel row are contiguous in both the input and the weights: one loop
 * over them. `direct` (a plain float output): scale, shift and ReLU as conv_epilogue_avx2 computes them,
 * stored from the registers; otherwise the sums go to acc[block - ob][pixel][channel] for the epilogue. */
__attribute__((target(AVX2), always_inline)) static inline void conv_tile_avx2(const Stage *s, const float *in,
                                                                              void *out, int64_t y, int64_t x0,
                                                                              int64_t g, int64_t np, int64_t ob,
                                                                              const int NP, const int NR,
                                                                              const int64_t unit, int direct,
                                                                              float acc[2][PX][BLOCK]) {
    const float *weight = (const float *)s->weight;
    const int64_t step = unit ? unit : s->stride * s->in_pix;
    const int merged = s->in_pix == s->cin;
    const int64_t run = merged ? s->kw * s->cin : s->cin, parts = merged ? 1 : s->kw;
    __m256 a[12]; /* NP x NR <= 12 used, a[p * NR + r]: a fixed size, so that they can live in registers */
#pragma GCC unroll 8
    for (int p = 0; p < NP; p++)
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) a[p * NR + r] = _mm256_setzero_ps();
    for (int64_t ky = 0; ky < s->kh; ky++) {
        const float *wp = weight + ky * s->kw * s->cin * s->cout_pad + ob * BLOCK;
        for (int64_t part = 0; part < parts; part++) {
            const float *ip = in + s->in_off + (y * s->stride + ky) * s->in_row + ((x0 + g) * s->stride + part) * s->in_pix;
            for (int64_t t = 0; t < run; t++, wp += s->cout_pad) {
                __m256 w[4];
#pragma GCC unroll 4
                for (int r = 0; r < NR; r++) w[r] = _mm256_loadu_ps(wp + 8 * r);
#pragma GCC unroll 8
                for (int p = 0; p < NP; p++) {
                    const __m256 v = _mm256_broadcast_ss(ip + p * step + t);
#pragma GCC unroll 4
                    for (int r = 0; r < NR; r++) a[p * NR + r] = _mm256_fmadd_ps(v, w[r], a[p * NR + r]);
                }
            }
        }
    }
    if (!direct) {
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++)
            if (g + p < np)
#pragma GCC unroll 4
                for (int r = 0; r < NR; r++) _mm256_storeu_ps(&acc[r >> 1][g + p][(r & 1) * 8], a[p * NR + r]);
        return;
    }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        const int64_t o0 = ob * BLOCK + 8 * r, n = s->cout - o0;
        if (n <= 0) break;
        const __m256i lanes = lanes8(n);
        const __m256 scale = load8(s->scale + o0, n, lanes), shift = load8(s->shift + o0, n, lanes);
        float *dst = (float *)out + s->out_off + y * s->out_row + (x0 + g) * s->out_pix + o0;
#pragma GCC unroll 8
        for (int p = 0; p < NP; p++)
            if (g + p < np) {
                __m256 v = _mm256_add_ps(_mm256_mul_ps(a[p * NR + r], scale), shift);
                if (s->relu) v = _mm256_max_ps(v, zero);
                put8(dst + p * s->out_pix, n, lanes, v); /* the channels past cout belong to the next pixel */
            }
    }
}

/* Pairs of 16-channel blocks in tiles of 3 pixels x 32 channels, a last odd block in tiles of 4 x 16, or
 * of 8 x 8 where it holds at most 8 channels (the 68-point head's last 4). A plain float output
 * (`direct`) is tiled along whole rows: no pixel is computed and dropped at the end of each block of
 * PX, as the sign bits' blocks need; other outputs go in blocks of PX pixels through the epilogue. */
__attribute__((target(AVX2), always_inline)) static inline void conv_f32_avx2_body(const Stage *s, const float *in,
                                                                                  void *out, const int64_t unit,
                                                                                  const int direct) {
    const int64_t nblocks = s->cout_pad / BLOCK;
    if (direct) {
        const int64_t wo = s->wo, narrow = nblocks % 2 && s->cout - (nblocks - 1) * BLOCK <= 8;
        for (int64_t y = 0; y < s->ho; y++) {
            int64_t ob = 0;
            for (; ob + 2 <= nblocks; ob += 2)
                for (int64_t g = 0; g < wo; g += 3) conv_tile_avx2(s, in, out, y, 0, g, wo, ob, 3, 4, unit, 1, NULL);
            if (ob == nblocks) continue;
            if (narrow)
                for (int64_t g = 0; g < wo; g += 8) conv_tile_avx2(s, in, out, y, 0, g, wo, ob, 8, 1, unit, 1, NULL);
            else
                for (int64_t g = 0; g < wo; g += 4) conv_tile_avx2(s, in, out, y, 0, g, wo, ob, 4, 2, unit, 1, NULL);
        }
        return;
    }
    uint64_t bits[PX][MAXWORDS];
    float acc[2][PX][BLOCK];
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += PX) {
            const int64_t np = s->wo - x0 < PX ? s->wo - x0 : PX;
            if (s->out_mode == OUT_BITS || s->aff_out) clear_bits(s, bits);
            int64_t ob = 0;
            for (; ob + 2 <= nblocks; ob += 2) {
                for (int64_t g = 0; g < np; g += 3) conv_tile_avx2(s, in, out, y, x0, g, np, ob, 3, 4, unit, 0, acc);
                conv_epilogue_avx2(s, acc[0], ob, np, y, x0, out, bits);
                conv_epilogue_avx2(s, acc[1], ob + 1, np, y, x0, out, bits);
            }
            if (ob < nblocks) {
                for (int64_t g = 0; g < np; g += 4) conv_tile_avx2(s, in, out, y, x0, g, np, ob, 4, 2, unit, 0, acc);
                conv_epilogue_avx2(s, acc[0], ob, np, y, x0, out, bits);
            }
            finish_bits(s, bits, np, y, x0, out);
        }
}

/* Each instance a function of its own: inlined into one dispatcher, their accumulators spilled (as
 * AVX512_VARIANT's). The common pixel steps are constants (as conv_f32_avx512's). */
#define CONV_AVX2_VARIANTS(UNIT)                                                                                 \
    __attribute__((target(AVX2), noinline)) static void conv_f32_avx2_direct_##UNIT(const Stage *s, const float *in, \
                                                                                   void *out) {                    \
        conv_f32_avx2_body(s, in, out, UNIT, 1);                                                                 \
    }                                                                                                            \
    __attribute__((target(AVX2), noinline)) static void conv_f32_avx2_blocks_##UNIT(const Stage *s, const float *in, \
                                                                                   void *out) {                    \
        conv_f32_avx2_body(s, in, out, UNIT, 0);                                                                 \
    }
CONV_AVX2_VARIANTS(0)  /* read at run time */
CONV_AVX2_VARIANTS(1)  /* gray, stride 1 */
CONV_AVX2_VARIANTS(2)  /* gray, stride 2: the hourglass stem */
CONV_AVX2_VARIANTS(64) /* 64 channels: the hourglass head */

__attribute__((target(AVX2))) static void conv_f32_avx2(const Stage *s, const float *in, void *out) {
    const int direct = s->out_mode == OUT_FLOAT && !s->aff_out && !s->aff2_out && !s->no_store;
    switch (s->in_pix * s->stride) {
    case 1: return direct ? conv_f32_avx2_direct_1(s, in, out) : conv_f32_avx2_blocks_1(s, in, out);
    case 2: return direct ? conv_f32_avx2_direct_2(s, in, out) : conv_f32_avx2_blocks_2(s, in, out);
    case 64: return direct ? conv_f32_avx2_direct_64(s, in, out) : conv_f32_avx2_blocks_64(s, in, out);
    default: return direct ? conv_f32_avx2_direct_0(s, in, out) : conv_f32_avx2_blocks_0(s, in, out);
    }
}

/* AVX2: a gray image's first layer to sign bits (as conv1_bits_avx512: one input channel, stride 1):
 * 16 pixels (two registers) x up to CONV1_AVX2_FLIGHT channels of FMA chains, each over the taps in order
 * from a multiply (PyTorch's summation order, as conv1_signs). Each channel's comparison (all ones in the
 * lanes of the pixels whose sign is +1) is ANDed with the channel's bit and ORed into 32-bit lanes: eight
 * pixels' words of 32 channels per register, interleaved into 64-bit words when the chunk is stored. */
#define CONV1_AVX2_FLIGHT 6

/* Channels o..o+n-1 of 16 (vecs = 2) or 8 pixels into the chunk's words: half[c / 32][h] collects
 * channel c's bits of pixels 8h...8h+7. */
static inline __attribute__((always_inline, target(AVX2))) void conv1_words_avx2(const Stage *s, const float *base,
                                                                                  const int64_t *offs, int64_t taps,
                                                                                  int64_t o, const int n,
                                                                                  const int vecs, __m256i (*half)[2]) {
    const float *weight = (const float *)s->weight; /* [kh][kw][1][cout_pad] */
    const int64_t cp = s->cout_pad;
    __m256 a[CONV1_AVX2_FLIGHT][2];
    {
        const __m256 v0 = _mm256_loadu_ps(base + offs[0]), v1 = vecs > 1 ? _mm256_loadu_ps(base + offs[0] + 8) : v0;
#pragma GCC unroll 8
        for (int j = 0; j < n; j++) {
            const __m256 w = _mm256_broadcast_ss(weight + o + j);
            a[j][0] = _mm256_mul_ps(v0, w);
            if (vecs > 1) a[j][1] = _mm256_mul_ps(v1, w);
        }
    }
    for (int64_t t = 1; t < taps; t++) {
        const __m256 v0 = _mm256_loadu_ps(base + offs[t]), v1 = vecs > 1 ? _mm256_loadu_ps(base + offs[t] + 8) : v0;
#pragma GCC unroll 8
        for (int j = 0; j < n; j++) {
            const __m256 w = _mm256_broadcast_ss(weight + t * cp + o + j);
            a[j][0] = _mm256_fmadd_ps(v0, w, a[j][0]);
            if (vecs > 1) a[j][1] = _mm256_fmadd_ps(v1, w, a[j][1]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < n; j++) {
        const int64_t c = o + j;
        const __m256 scale = _mm256_broadcast_ss(s->scale + c), shift = _mm256_broadcast_ss(s->shift + c);
        const __m256i bit = _mm256_set1_epi32((int)(1u << (c & 31)));
        for (int h = 0; h < vecs; h++) {
            __m256 r = _mm256_add_ps(_mm256_mul_ps(a[j][h], scale), shift);
            if (s->relu) r = _mm256_max_ps(r, zero);
            const __m256i on = _mm256_castps_si256(_mm256_cmp_ps(r, zero, _CMP_GE_OQ));
            half[c >> 5][h] = _mm256_or_si256(half[c >> 5][h], _mm256_and_si256(on, bit));
        }
    }
}

/* Constant chain counts, so that the chains stay in registers; each instance a function of its own
 * (inlined side by side into conv1_bits_avx2, their chains spilled, as AVX512_VARIANT's). */
typedef void (*Conv1Words)(const Stage *s, const float *base, const int64_t *offs, int64_t taps, int64_t o,
                           __m256i (*half)[2]);
#define CONV1_AVX2_VARIANT(N, VECS)                                                                             \
    __attribute__((target(AVX2), noinline)) static void conv1_words_avx2_##N##_##VECS(                         \
        const Stage *s, const float *base, const int64_t *offs, int64_t taps, int64_t o, __m256i(*half)[2]) { \
        conv1_words_avx2(s, base, offs, taps, o, N, VECS, half);                                               \
    }
#define CONV1_AVX2_VARIANTS(N) CONV1_AVX2_VARIANT(N, 1) CONV1_AVX2_VARIANT(N, 2)
CONV1_AVX2_VARIANTS(1)
CONV1_AVX2_VARIANTS(2)
CONV1_AVX2_VARIANTS(3)
CONV1_AVX2_VARIANTS(4)
CONV1_AVX2_VARIANTS(5)
CONV1_AVX2_VARIANTS(6)
/* [chains - 1][pixels > 8] */
static const Conv1Words conv1_words_avx2_variants[CONV1_AVX2_FLIGHT][2] = {
    {conv1_words_avx2_1_1, conv1_words_avx2_1_2}, {conv1_words_avx2_2_1, conv1_words_avx2_2_2},
    {conv1_words_avx2_3_1, conv1_words_avx2_3_2}, {conv1_words_avx2_4_1, conv1_words_avx2_4_2},
    {conv1_words_avx2_5_1, conv1_words_avx2_5_2}, {conv1_words_avx2_6_1, conv1_words_avx2_6_2}};

__attribute__((target(AVX2))) static void conv1_bits_avx2(const Stage *s, const float *in, void *out) {
    const int64_t taps = s->kh * s->kw, nwords = (s->cout + 63) / 64;
    /* the channels in flights of at most CONV1_AVX2_FLIGHT, as even as can be (10 = 5 + 5, not 6 + 4) */
    const int64_t flights = (s->cout + CONV1_AVX2_FLIGHT - 1) / CONV1_AVX2_FLIGHT;
    int64_t offs[taps]; /* as take_affine's rows: small arrays on the stack (cout <= 4,096 by MAXWORDS) */
    __m256i half[2 * nwords][2];
    for (int64_t ky = 0, t = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++) offs[t++] = ky * s->in_row + kx;
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += 16) { /* rows have slack: 16 loads past the last pixel */
            const int64_t np = s->wo - x0 < 16 ? s->wo - x0 : 16;
            const float *base = in + s->in_off + y * s->in_row + x0;
            for (int64_t i = 0; i < 2 * nwords; i++) half[i][0] = half[i][1] = _mm256_setzero_si256();
            for (int64_t f = 0, o = 0; f < flights; f++) {
                const int64_t n = (s->cout - o) / (flights - f); /* the rest, spread over the flights left */
                /* a row's last 8 or fewer pixels: one register */
                conv1_words_avx2_variants[n - 1][np > 8](s, base, offs, taps, o, half);
                o += n;
            }
            uint64_t *dst = (uint64_t *)out + s->out_off + y * s->out_row + x0;
            for (int64_t w = 0; w < nwords; w++) {
                uint64_t word[16];
                for (int h = 0; h < 2; h++) { /* (low, high) 32-bit halves -> pixels 8h...8h+7's words */
                    const __m256i lo = half[2 * w][h], hi = half[2 * w + 1][h];
                    const __m256i a = _mm256_unpacklo_epi32(lo, hi), b = _mm256_unpackhi_epi32(lo, hi);
                    _mm256_storeu_si256((__m256i *)(word + 8 * h), _mm256_permute2x128_si256(a, b, 0x20));
                    _mm256_storeu_si256((__m256i *)(word + 8 * h + 4), _mm256_permute2x128_si256(a, b, 0x31));
                }
                for (int64_t p = 0; p < np; p++) dst[w * s->out_plane + p] = word[p];
            }
        }
}

/* NB blocks of 16 channels x 8 pixels of accumulators (NB = 2: 16 registers). In HWC the taps
 * (kx, c) of one kernel row are contiguous in both the input and the weights: one loop over them. */
__attribute__((target(AVX512), always_inline)) static inline void conv_f32_avx512_blocks(
    const Stage *s, const float *in, void *out, int64_t y, int64_t x0, int64_t np, int64_t ob, const int nb,
    const int unit, uint64_t bits[PX][MAXWORDS]) {
    const float *weight = (const float *)s->weight;
    const int merged = s->in_pix == s->cin; /* dense HWC: the taps (kx, c) of a kernel row are one run */
    const int64_t run = merged ? s->kw * s->cin : s->cin, parts = merged ? 1 : s->kw;
    const int64_t step = unit ? unit : s->stride * s->in_pix; /* unit: the pixel step as a constant */
    __m512 a[2][PX];
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < PX; p++) a[b][p] = _mm512_setzero_ps();
    for (int64_t ky = 0; ky < s->kh; ky++) {
        const float *wp = weight + ky * s->kw * s->cin * s->cout_pad + ob * BLOCK;
        for (int64_t part = 0; part < parts; part++) {
            const float *ip =
                in + s->in_off + (y * s->stride + ky) * s->in_row + (x0 * s->stride + part) * s->in_pix;
            for (int64_t t = 0; t < run; t++, wp += s->cout_pad) {
                __m512 w[2];
                for (int b = 0; b < nb; b++) w[b] = _mm512_loadu_ps(wp + b * BLOCK);
#pragma GCC unroll 8
                for (int p = 0; p < PX; p++) {
                    const __m512 v = _mm512_set1_ps(ip[p * step + t]);
                    for (int b = 0; b < nb; b++) a[b][p] = _mm512_fmadd_ps(v, w[b], a[b][p]);
                }
            }
        }
    }
    for (int b = 0; b < nb; b++) {
        const int64_t o0 = (ob + b) * BLOCK, nj = s->cout - o0 < BLOCK ? s->cout - o0 : BLOCK;
        const __mmask16 chans = (__mmask16)((1u << nj) - 1);
        const __m512 scale = _mm512_maskz_loadu_ps(chans, s->scale + o0);
        const __m512 shift = _mm512_maskz_loadu_ps(chans, s->shift + o0);
#pragma GCC unroll 8
        for (int p = 0; p < PX; p++) { /* constant p, so a[][] stays in registers */
            if (p >= np) break;
            __m512 v = _mm512_add_ps(_mm512_mul_ps(a[b][p], scale), shift);
            if (s->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
            if (s->out_mode == OUT_BITS) {
                const __mmask16 on = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ) & chans;
                bits[p][o0 >> 6] |= (uint64_t)on << (o0 & 63);
                continue;
            }
            if (!s->no_store)
                _mm512_mask_storeu_ps((float *)out + s->out_off + y * s->out_row + (x0 + p) * s->out_pix + o0, chans, v);
            if (s->aff_out) bits[p][o0 >> 6] |= (uint64_t)affine_sign16(s, v, o0, chans) << (o0 & 63);
            if (s->aff2_out)
                bits[p][(s->cout + 63) / 64 + (o0 >> 6)] |=
                    (uint64_t)signs16(s->aff2_scale, s->aff2_shift, s->aff2_relu, v, o0, chans) << (o0 & 63);
        }
    }
}

/* One input channel (a gray image) to sign bits, 16 pixels per register. The kh x kw input vectors
 * of a row chunk stay in registers (taps <= 16) and are reused by every output channel, four channels at
 * a time; each channel's sign mask is ORed into the 16 pixels' output word, which stays in two
 * registers for 64 channels. Loads are masked to the
 * chunk's pixels, so nothing past a row's last output is read. */
#define CONV1_FLIGHT 12
/* The sign masks of output channels o..o+n-1 (n <= CONV1_FLIGHT) over 16 pixels: per channel one FMA chain over
 * the taps in order (weights wp[t * cout_pad] broadcast from memory), the summation order of a direct
 * convolution, so that the sum rounds as PyTorch's does wherever it accumulates tap after tap; the n
 * chains are independent. Then scale, shift and ReLU. */
static inline __attribute__((always_inline, target(AVX512))) void conv1_signs(const Stage *s, const __m512 *v,
                                                                               const float *weight, int64_t o,
                                                                               const int64_t n, const int64_t taps,
                                                                               __mmask16 *on) {
    const int64_t cp = s->cout_pad;
    __m512 a[CONV1_FLIGHT];
    for (int64_t j = 0; j < n; j++) a[j] = _mm512_mul_ps(v[0], _mm512_set1_ps(weight[o + j]));
    for (int64_t t = 1; t < taps; t++)
        for (int64_t j = 0; j < n; j++) a[j] = _mm512_fmadd_ps(v[t], _mm512_set1_ps(weight[t * cp + o + j]), a[j]);
    for (int64_t j = 0; j < n; j++) {
        __m512 r = _mm512_add_ps(_mm512_mul_ps(a[j], _mm512_set1_ps(s->scale[o + j])), _mm512_set1_ps(s->shift[o + j]));
        if (s->relu) r = _mm512_max_ps(r, _mm512_setzero_ps());
        on[j] = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_GE_OQ);
    }
}

/* The sign words (output word w) of the 16 pixels whose tap inputs are v: pixels 0-7 in lo, 8-15 in hi. */
static inline __attribute__((always_inline, target(AVX512))) void conv1_words(const Stage *s, const __m512 *v,
                                                                              const int64_t taps, int64_t w,
                                                                              __m512i *lo_out, __m512i *hi_out) {
    const float *weight = (const float *)s->weight; /* [kh][kw][1][cout_pad] */
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    const int64_t end = s->cout < 64 * (w + 1) ? s->cout : 64 * (w + 1);
    /* up to CONV1_FLIGHT channels in flight, as independent chains: a chain waits 4 cycles
     * for each FMA, and fewer chains than the core issues in that time leave it idle */
    for (int64_t o = 64 * w; o < end; o += CONV1_FLIGHT) {
        const int64_t n = end - o < CONV1_FLIGHT ? end - o : CONV1_FLIGHT;
        __mmask16 on[CONV1_FLIGHT];
        switch (n) { /* constant chain counts, so that the chains stay in registers */
#define CONV1_CASE(k) \
    case k: conv1_signs(s, v, weight, o, k, taps, on); break;
            CONV1_CASE(1) CONV1_CASE(2) CONV1_CASE(3) CONV1_CASE(4) CONV1_CASE(5) CONV1_CASE(6)
            CONV1_CASE(7) CONV1_CASE(8) CONV1_CASE(9) CONV1_CASE(10) CONV1_CASE(11) CONV1_CASE(12)
#undef CONV1_CASE
        }
        for (int64_t j = 0; j < n; j++) {
            const __m512i bit = _mm512_set1_epi64((long long)((uint64_t)1 << ((o + j) & 63)));
            lo = _mm512_mask_or_epi64(lo, (__mmask8)on[j], lo, bit);
            hi = _mm512_mask_or_epi64(hi, (__mmask8)(on[j] >> 8), hi, bit);
        }
    }
    *lo_out = lo, *hi_out = hi;
}

static inline __attribute__((always_inline, target(AVX512))) void conv1_bits_taps(const Stage *s, const float *in,
                                                                                  void *out, const int64_t taps) {
    const int64_t nwords = (s->cout + 63) / 64, full = s->wo / 16 * 16, tail = s->wo - full;
    /* a row's last pixels share a chunk with the next rows' (`rows` rows of `cap` lanes each): the
     * 5-point networks' 36-pixel rows are 16 + 16 + 4, so four rows' tails make one chunk, not four */
    const int64_t cap = tail <= 4 ? 4 : tail <= 8 ? 8 : 16, rows = 16 / cap;
    __m512 v[16];
    __m512i lo, hi;
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < (rows > 1 ? full : s->wo); x0 += 16) {
            const int64_t np = s->wo - x0 < 16 ? s->wo - x0 : 16;
            const __mmask16 valid = lanes16(np);
            for (int64_t ky = 0, t = 0; ky < s->kh; ky++)
                for (int64_t kx = 0; kx < s->kw; kx++, t++)
                    v[t] = _mm512_maskz_loadu_ps(valid, in + s->in_off + (y + ky) * s->in_row + x0 + kx);
            uint64_t *dst = (uint64_t *)out + s->out_off + y * s->out_row + x0;
            for (int64_t w = 0; w < nwords; w++) {
                conv1_words(s, v, taps, w, &lo, &hi);
                _mm512_mask_storeu_epi64(dst + w * s->out_plane, (__mmask8)valid, lo);
                _mm512_mask_storeu_epi64(dst + w * s->out_plane + 8, (__mmask8)(valid >> 8), hi);
            }
        }
    if (!tail || rows == 1) return;
    for (int64_t y0 = 0; y0 < s->ho; y0 += rows) {
        const int64_t nr = s->ho - y0 < rows ? s->ho - y0 : rows;
        /* row i's tail in lanes [i * cap, i * cap + tail): masked loads from i * cap floats before it */
        for (int64_t ky = 0, t = 0; ky < s->kh; ky++)
            for (int64_t kx = 0; kx < s->kw; kx++, t++) {
                v[t] = _mm512_setzero_ps();
                for (int64_t i = 0; i < nr; i++)
                    v[t] = _mm512_mask_loadu_ps(v[t], (__mmask16)(lanes16(tail) << (i * cap)),
                                                in + s->in_off + (y0 + i + ky) * s->in_row + full + kx - i * cap);
            }
        for (int64_t w = 0; w < nwords; w++) {
            conv1_words(s, v, taps, w, &lo, &hi);
            for (int64_t i = 0; i < nr; i++) { /* lane i * cap + l to pixel full + l of row y0 + i */
                uint64_t *dst = (uint64_t *)out + s->out_off + (y0 + i) * s->out_row + full + w * s->out_plane - i * cap;
                const __mmask16 mine = (__mmask16)(lanes16(tail) << (i * cap));
                _mm512_mask_storeu_epi64(dst, (__mmask8)mine, lo);
                _mm512_mask_storeu_epi64(dst + 8, (__mmask8)(mine >> 8), hi);
            }
        }
    }
}

__attribute__((target(AVX512))) static void conv1_bits_avx512(const Stage *s, const float *in, void *out) {
    const int64_t taps = s->kh * s->kw;
    if (taps == 16) return conv1_bits_taps(s, in, out, 16); /* the 5-point networks' 4 x 4: constant taps */
    if (taps == 9) return conv1_bits_taps(s, in, out, 9);
    conv1_bits_taps(s, in, out, taps);
}

__attribute__((target(AVX512))) static void conv_f32_avx512(const Stage *s, const float *in, void *out) {
    const int64_t nblocks = s->cout_pad / BLOCK;
    uint64_t bits[PX][MAXWORDS];
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x0 = 0; x0 < s->wo; x0 += PX) {
            const int64_t np = s->wo - x0 < PX ? s->wo - x0 : PX;
            if (s->out_mode == OUT_BITS || s->aff_out) clear_bits(s, bits);
            int64_t ob = 0;
            /* common pixel steps as constants, so that pixel offsets are immediates (no index registers) */
#define CONV_F32_BLOCKS(step)                                                                                  \
    do {                                                                                                       \
        for (; ob + 2 <= nblocks; ob += 2) conv_f32_avx512_blocks(s, in, out, y, x0, np, ob, 2, step, bits); \
        if (ob < nblocks) conv_f32_avx512_blocks(s, in, out, y, x0, np, ob, 1, step, bits);                  \
    } while (0)
            switch (s->in_pix * s->stride) {
            case 1: CONV_F32_BLOCKS(1); break; /* gray, stride 1 */
            case 2: CONV_F32_BLOCKS(2); break; /* gray, stride 2: the hourglass stem */
            case 64: CONV_F32_BLOCKS(64); break; /* 64 channels: the hourglass head */
            default: CONV_F32_BLOCKS(0);
            }
#undef CONV_F32_BLOCKS
            finish_bits(s, bits, np, y, x0, out);
        }
}
#endif

static void conv_f32(const Stage *s, const float *in, void *out) {
#if defined(BF_X86)
    /* a gray image's first layer (taps in registers) */
    if (isa_current == ISA_AVX512 && s->cin == 1 && s->in_pix == 1 && s->stride == 1 && s->out_mode == OUT_BITS &&
        s->kh * s->kw <= 16)
        return conv1_bits_avx512(s, in, out);
    if (isa_current == ISA_AVX512) return conv_f32_avx512(s, in, out);
    if (isa_current == ISA_AVX2 && s->cin == 1 && s->in_pix == 1 && s->stride == 1 && s->out_mode == OUT_BITS)
        return conv1_bits_avx2(s, in, out);
    if (isa_current == ISA_AVX2) return conv_f32_avx2(s, in, out);
#endif
    conv_f32_portable(s, in, out);
}

/* ------------------------------------------------------------------------------------------- */
/* Pooling (floor mode; a padded border holds -inf, or 0 bits), element-wise stages, sign packing,
 * input layout. */

/* The signs of v * scale + shift (all +1 with a ReLU) for `channels` values of one pixel, as words
 * `plane` apart from dst. */
#if defined(BF_X86)
__attribute__((target(AVX2))) static void affine_signs_avx2(const float *v, const float *scale, const float *shift,
                                                            int64_t relu, int64_t channels, uint64_t *dst,
                                                            int64_t plane) {
    for (int64_t w = 0; w < (channels + 63) / 64; w++) {
        uint64_t m = 0;
        for (int64_t c = w * 64; c < channels && c < w * 64 + 64; c += 8) {
            const int64_t n = channels - c < 8 ? channels - c : 8;
            const int mask = (1 << n) - 1;
            const __m256i lanes = lanes8(n);
            const int on =
                relu ? mask : signs8(load8(v + c, n, lanes), load8(scale + c, n, lanes), load8(shift + c, n, lanes), mask);
            m |= (uint64_t)on << (c & 63);
        }
        dst[w * plane] = m;
    }
}
#endif

static void affine_signs(const float *v, const float *scale, const float *shift, int64_t relu, int64_t channels,
                         uint64_t *dst, int64_t plane) {
#if defined(BF_X86)
    if (isa_current == ISA_AVX2) return affine_signs_avx2(v, scale, shift, relu, channels, dst, plane);
#endif
    for (int64_t w = 0; w < (channels + 63) / 64; w++) {
        uint64_t m = 0;
        for (int64_t c = w * 64; c < channels && c < w * 64 + 64; c++) {
            float a = v[c] * scale[c];
            a = a + shift[c];
            m |= (uint64_t)(a >= 0 || relu) << (c & 63);
        }
        dst[w * plane] = m;
    }
}

/* The fused affine's sign bits of pixel (y, x), whose `cout` floats are at v (nothing without one). */
static void affine_bits(const Stage *s, const float *v, int64_t y, int64_t x) {
    if (s->aff_out)
        affine_signs(v, s->aff_scale, s->aff_shift, s->aff_relu, s->cout, s->aff_out + s->aff_off + y * s->aff_row + x,
                     s->aff_plane);
}

static void pool_portable(const Stage *s, const float *in, float *out) {
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            float *o = out + s->out_off + y * s->out_row + x * s->out_pix;
            const float *first = in + s->in_off + y * s->stride * s->in_row + x * s->stride * s->in_pix;
            for (int64_t c = 0; c < s->cout; c++) o[c] = first[c];
            for (int64_t dy = 0; dy < s->size; dy++)
                for (int64_t dx = 0; dx < s->size; dx++) {
                    const float *ip = first + dy * s->in_row + dx * s->in_pix;
                    for (int64_t c = 0; c < s->cout; c++) o[c] = ip[c] > o[c] ? ip[c] : o[c];
                }
            affine_bits(s, o, y, x);
        }
}

/* max-pool of signs: the max is >= 0 exactly when one of the window is, so OR the bits. */
static void pool_bits(const Stage *s, const uint64_t *in, uint64_t *out) {
    if (s->size == 2 && s->stride == 2) { /* the common window, unrolled */
        for (int64_t w = 0; w < s->words; w++)
            for (int64_t y = 0; y < s->ho; y++) {
                const uint64_t *a = in + s->in_off + w * s->in_plane + 2 * y * s->in_row, *b = a + s->in_row;
                uint64_t *o = out + s->out_off + w * s->out_plane + y * s->out_row;
                for (int64_t x = 0; x < s->wo; x++) o[x] = a[2 * x] | a[2 * x + 1] | b[2 * x] | b[2 * x + 1];
            }
        return;
    }
    for (int64_t w = 0; w < s->words; w++)
        for (int64_t y = 0; y < s->ho; y++)
            for (int64_t x = 0; x < s->wo; x++) {
                uint64_t m = 0;
                const uint64_t *ip = in + s->in_off + w * s->in_plane + y * s->stride * s->in_row + x * s->stride;
                for (int64_t dy = 0; dy < s->size; dy++)
                    for (int64_t dx = 0; dx < s->size; dx++) m |= ip[dy * s->in_row + dx];
                out[s->out_off + w * s->out_plane + y * s->out_row + x] = m;
            }
}

/* x * scale + shift (a BatchNorm), optional ReLU; to floats, or to sign bits for a binary layer. */
static void affine_portable(const Stage *s, const float *in, void *out) {
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            const float *ip = in + s->in_off + y * s->in_row + x * s->in_pix;
            if (s->out_mode == OUT_FLOAT) {
                float *o = (float *)out + s->out_off + y * s->out_row + x * s->out_pix;
                for (int64_t c = 0; c < s->cout; c++) {
                    float v = ip[c] * s->scale[c];
                    v = v + s->shift[c];
                    o[c] = s->relu && v < 0 ? 0 : v;
                }
                continue;
            }
            affine_signs(ip, s->scale, s->shift, s->relu, s->cout, (uint64_t *)out + s->out_off + y * s->out_row + x,
                         s->out_plane);
        }
}

#if defined(BF_X86)
/* Adds the sign bits `on` of channels c..c+15 to `word`, and stores the word to pixel (its first word
 * at dst, words `plane` apart) when it is full or the channels end; returns what is left to add to. */
__attribute__((target(AVX512))) static inline uint64_t put_signs16(uint64_t *dst, int64_t plane, int64_t c,
                                                                   int64_t channels, __mmask16 on, uint64_t word) {
    word |= (uint64_t)on << (c & 63);
    if ((c & 63) != 48 && c + 16 < channels) return word;
    dst[(c >> 6) * plane] = word;
    return 0;
}

/* The same for a fused affine's signs of 16 channels' values v at pixel (y, x). */
__attribute__((target(AVX512))) static inline uint64_t affine_bits16(const Stage *s, __m512 v, int64_t c, __mmask16 m,
                                                                     int64_t y, int64_t x, uint64_t word) {
    return put_signs16(s->aff_out + s->aff_off + y * s->aff_row + x, s->aff_plane, c, s->cout,
                       affine_sign16(s, v, c, m), word);
}

/* An affine's sign test on at most 64 channels with its constants in registers: each pixel's signs
 * are one word (no per-chunk stores or branches). */
typedef struct {
    int64_t chunks;
    int relu;
    __mmask16 valid[4];
    __m512 scale[4], shift[4];
} Signs64;

__attribute__((target(AVX512))) static inline Signs64 signs64(int64_t channels, const float *scale, const float *shift,
                                                             int relu) {
    Signs64 g;
    g.chunks = (channels + 15) / 16;
    g.relu = relu;
    for (int64_t c = 0; c < g.chunks; c++) {
        g.valid[c] = lanes16(channels - 16 * c);
        g.scale[c] = _mm512_maskz_loadu_ps(g.valid[c], scale + 16 * c);
        g.shift[c] = _mm512_maskz_loadu_ps(g.valid[c], shift + 16 * c);
    }
    return g;
}

/* The signs of chunk c (channels 16c...) of values v, placed in the pixel's word. */
__attribute__((target(AVX512))) static inline uint64_t signs64_chunk(const Signs64 *g, int64_t c, __m512 v) {
    if (g->relu) return (uint64_t)g->valid[c] << (16 * c); /* sign(relu(a)) is +1 */
    const __m512 a = _mm512_add_ps(_mm512_mul_ps(v, g->scale[c]), g->shift[c]);
    return (uint64_t)(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GE_OQ) & g->valid[c]) << (16 * c);
}

/* A stage's fused affine as Signs64 (its output has at most 64 channels). */
__attribute__((target(AVX512))) static inline Signs64 fused_signs64(const Stage *s) {
    return signs64(s->cout, s->aff_scale, s->aff_shift, (int)s->aff_relu);
}

/* An affine stage to sign bits of at most 64 channels. */
__attribute__((target(AVX512))) static void affine_avx512_word(const Stage *s, const float *in, uint64_t *out) {
    Signs64 g = signs64(s->cout, s->scale, s->shift, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t y = 0; y < s->ho; y++) {
        const float *ip = in + s->in_off + y * s->in_row;
        uint64_t *o = out + s->out_off + y * s->out_row;
        for (int64_t x = 0; x < s->wo; x++, ip += s->in_pix) {
            uint64_t word = 0;
            for (int64_t c = 0; c < g.chunks; c++) {
                __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(g.valid[c], ip + 16 * c), g.scale[c]),
                                         g.shift[c]);
                if (s->relu) v = _mm512_max_ps(v, zero);
                word |= (uint64_t)(_mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ) & g.valid[c]) << (16 * c);
            }
            o[x] = word;
        }
    }
}

__attribute__((target(AVX512))) static void affine_avx512(const Stage *s, const float *in, void *out) {
    const __m512 zero = _mm512_setzero_ps();
    if (s->out_mode == OUT_BITS && s->cout <= 64) return affine_avx512_word(s, in, out);
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            const float *ip = in + s->in_off + y * s->in_row + x * s->in_pix;
            uint64_t word = 0;
            for (int64_t c = 0; c < s->cout; c += 16) {
                const __mmask16 valid = lanes16(s->cout - c);
                __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(valid, ip + c),
                                                       _mm512_maskz_loadu_ps(valid, s->scale + c)),
                                         _mm512_maskz_loadu_ps(valid, s->shift + c));
                if (s->relu) v = _mm512_max_ps(v, zero);
                if (s->out_mode == OUT_FLOAT) {
                    _mm512_mask_storeu_ps((float *)out + s->out_off + y * s->out_row + x * s->out_pix + c, valid, v);
                    continue;
                }
                word = put_signs16((uint64_t *)out + s->out_off + y * s->out_row + x, s->out_plane, c, s->cout,
                                   _mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ) & valid, word);
            }
        }
}
#endif

#if defined(BF_X86)
/* AVX2 element-wise stages: 8 channels per register, the fused signs as affine_signs_avx2. The stage's
 * fields are read into locals first: stores through the float pointers could alias them, and the
 * compiler would reload them per pixel. */

/* A stage's fused affine -> sign (its output bits at `out`, NULL where it has none), in locals. */
typedef struct {
    uint64_t *out;
    const float *scale, *shift;
    int64_t row, plane, cout;
    int relu;
} FusedSigns;

static inline FusedSigns fused_signs(const Stage *s) {
    const FusedSigns f = {s->aff_out ? s->aff_out + s->aff_off : NULL, s->aff_scale, s->aff_shift, s->aff_row,
                          s->aff_plane, s->cout, (int)s->aff_relu};
    return f;
}

/* The fused affine's signs of channels c..c+7 (values v) into `word`, stored to pixel (y, x) when the
 * word is full or the channels end; returns what is left to add to. */
__attribute__((target(AVX2))) static inline uint64_t fused_signs8(const FusedSigns *f, __m256 v, int64_t c, int64_t n,
                                                                  __m256i lanes, int64_t y, int64_t x, uint64_t word) {
    const int mask = (1 << (n < 8 ? n : 8)) - 1;
    const int on = f->relu ? mask : signs8(v, load8(f->scale + c, n, lanes), load8(f->shift + c, n, lanes), mask);
    word |= (uint64_t)on << (c & 63);
    if ((c & 63) != 56 && c + 8 < f->cout) return word;
    f->out[y * f->row + x + (c >> 6) * f->plane] = word;
    return 0;
}

/* fused_signs8 of 8 whole channels (c + 8 <= cout), the ReLU a constant of the caller; dst: the pixel's
 * first word. */
__attribute__((target(AVX2), always_inline)) static inline uint64_t whole_signs8(const FusedSigns *f, __m256 v, int64_t c,
                                                                               const int relu, uint64_t word,
                                                                               uint64_t *dst) {
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(f->scale + c)), _mm256_loadu_ps(f->shift + c));
    const uint64_t on = relu ? 0xff : (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ));
    word |= on << (c & 63);
    if ((c & 63) != 56 && c + 8 < f->cout) return word;
    dst[(c >> 6) * f->plane] = word;
    return 0;
}

/* 8 floats at p: a whole register, or the lanes' (n < 8 channels left). */
__attribute__((target(AVX2), always_inline)) static inline __m256 get8(const float *p, int64_t n, __m256i lanes,
                                                                     const int whole) {
    return whole ? _mm256_loadu_ps(p) : load8(p, n, lanes);
}

__attribute__((target(AVX2), always_inline)) static inline void set8(float *p, int64_t n, __m256i lanes, __m256 v,
                                                                   const int whole) {
    if (whole)
        _mm256_storeu_ps(p, v);
    else
        put8(p, n, lanes, v);
}

/* The element-wise stages' bodies. `whole`: channels a multiple of 8, with the fused signs' presence
 * and ReLU constants of each instance (the hourglass's sums and pools, without masks and branches
 * per 8 channels); else masks on the last channels, the signs and their ReLU read at run time. */
__attribute__((target(AVX2), always_inline)) static inline void add_avx2_body(const Stage *s, const float *a,
                                                                            const float *b, float *out,
                                                                            const int whole, const int signs,
                                                                            const int relu) {
    const int64_t ho = s->ho, wo = s->wo, cout = s->cout, in_row = s->in_row, in_pix = s->in_pix;
    const int64_t in2_row = s->in2_row, in2_pix = s->in2_pix, out_row = s->out_row, out_pix = s->out_pix;
    const FusedSigns f = fused_signs(s);
    a += s->in_off, b += s->in2_off, out += s->out_off;
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x = 0; x < wo; x++) {
            const float *pa = a + y * in_row + x * in_pix, *pb = b + y * in2_row + x * in2_pix;
            float *o = out + y * out_row + x * out_pix;
            uint64_t *dst = signs ? f.out + y * f.row + x : NULL, word = 0;
            for (int64_t c = 0; c < cout; c += 8) {
                const int64_t n = cout - c;
                const __m256i lanes = whole ? _mm256_setzero_si256() : lanes8(n); /* whole: unused */
                const __m256 v = _mm256_add_ps(get8(pa + c, n, lanes, whole), get8(pb + c, n, lanes, whole));
                set8(o + c, n, lanes, v, whole);
                if (signs)
                    word = whole ? whole_signs8(&f, v, c, relu, word, dst) : fused_signs8(&f, v, c, n, lanes, y, x, word);
            }
        }
}

__attribute__((target(AVX2), always_inline)) static inline void pool_avx2_body(const Stage *s, const float *in,
                                                                             float *out, const int whole,
                                                                             const int signs, const int relu) {
    const int64_t ho = s->ho, wo = s->wo, cout = s->cout, size = s->size, in_row = s->in_row, in_pix = s->in_pix;
    const int64_t step_row = s->stride * in_row, step_pix = s->stride * in_pix, out_row = s->out_row,
                  out_pix = s->out_pix;
    const FusedSigns f = fused_signs(s);
    in += s->in_off, out += s->out_off;
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x = 0; x < wo; x++) {
            const float *first = in + y * step_row + x * step_pix;
            float *o = out + y * out_row + x * out_pix;
            uint64_t *dst = signs ? f.out + y * f.row + x : NULL, word = 0;
            for (int64_t c = 0; c < cout; c += 8) { /* as pool_portable: max(window value, running max) */
                const int64_t n = cout - c;
                const __m256i lanes = whole ? _mm256_setzero_si256() : lanes8(n);
                __m256 v = get8(first + c, n, lanes, whole);
                for (int64_t dy = 0; dy < size; dy++)
                    for (int64_t dx = 0; dx < size; dx++)
                        v = _mm256_max_ps(v, get8(first + dy * in_row + dx * in_pix + c, n, lanes, whole));
                set8(o + c, n, lanes, v, whole);
                if (signs)
                    word = whole ? whole_signs8(&f, v, c, relu, word, dst) : fused_signs8(&f, v, c, n, lanes, y, x, word);
            }
        }
}

__attribute__((target(AVX2), always_inline)) static inline void affine_avx2_floats(const Stage *s, const float *in,
                                                                                 float *out, const int whole) {
    const __m256 zero = _mm256_setzero_ps();
    const int64_t ho = s->ho, wo = s->wo, cout = s->cout, in_row = s->in_row, in_pix = s->in_pix;
    const int64_t out_row = s->out_row, out_pix = s->out_pix;
    const int relu = (int)s->relu;
    const float *const scale = s->scale, *const shift = s->shift;
    in += s->in_off, out += s->out_off;
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x = 0; x < wo; x++) {
            const float *ip = in + y * in_row + x * in_pix;
            float *o = out + y * out_row + x * out_pix;
            for (int64_t c = 0; c < cout; c += 8) {
                const int64_t n = cout - c;
                const __m256i lanes = whole ? _mm256_setzero_si256() : lanes8(n); /* whole: unused */
                __m256 v = _mm256_add_ps(_mm256_mul_ps(get8(ip + c, n, lanes, whole), get8(scale + c, n, lanes, whole)),
                                         get8(shift + c, n, lanes, whole));
                if (relu) v = _mm256_max_ps(v, zero);
                set8(o + c, n, lanes, v, whole);
            }
        }
}

/* An affine stage: to floats, or to the signs of its values (as a fused affine's, from whole_signs8
 * where the channels fill whole registers). */
__attribute__((target(AVX2))) static void affine_avx2(const Stage *s, const float *in, void *out) {
    if (s->out_mode != OUT_BITS)
        return s->cout % 8 == 0 ? affine_avx2_floats(s, in, out, 1) : affine_avx2_floats(s, in, out, 0);
    const int64_t ho = s->ho, wo = s->wo, cout = s->cout, in_row = s->in_row, in_pix = s->in_pix;
    const int relu = (int)s->relu;
    const FusedSigns own = {(uint64_t *)out + s->out_off, s->scale, s->shift, s->out_row, s->out_plane, cout, relu};
    const int whole = cout % 8 == 0 && !relu; /* sign(relu(a)) is +1: affine_signs_avx2 says so */
    in += s->in_off;
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x = 0; x < wo; x++) {
            const float *ip = in + y * in_row + x * in_pix;
            uint64_t *dst = own.out + y * own.row + x, word = 0;
            if (!whole) {
                affine_signs_avx2(ip, own.scale, own.shift, relu, cout, dst, own.plane);
                continue;
            }
            for (int64_t c = 0; c < cout; c += 8) word = whole_signs8(&own, _mm256_loadu_ps(ip + c), c, 0, word, dst);
        }
}

#define WHOLE_AVX2(SIGNS, RELU)                                                                                 \
    __attribute__((target(AVX2), noinline)) static void add_avx2_whole_##SIGNS##RELU(const Stage *s, const float *a, \
                                                                                   const float *b, float *out) { \
        add_avx2_body(s, a, b, out, 1, SIGNS, RELU);                                                           \
    }                                                                                                          \
    __attribute__((target(AVX2), noinline)) static void pool_avx2_whole_##SIGNS##RELU(const Stage *s,          \
                                                                                    const float *in, float *out) { \
        pool_avx2_body(s, in, out, 1, SIGNS, RELU);                                                            \
    }
WHOLE_AVX2(0, 0)
WHOLE_AVX2(1, 0)
WHOLE_AVX2(1, 1)

__attribute__((target(AVX2))) static void add_avx2(const Stage *s, const float *a, const float *b, float *out) {
    if (s->cout % 8 == 0)
        return !s->aff_out ? add_avx2_whole_00(s, a, b, out)
                           : s->aff_relu ? add_avx2_whole_11(s, a, b, out) : add_avx2_whole_10(s, a, b, out);
    add_avx2_body(s, a, b, out, 0, s->aff_out != NULL, 0); /* fused_signs8 reads the ReLU */
}

__attribute__((target(AVX2))) static void pool_avx2(const Stage *s, const float *in, float *out) {
    if (s->cout % 8 == 0)
        return !s->aff_out ? pool_avx2_whole_00(s, in, out)
                           : s->aff_relu ? pool_avx2_whole_11(s, in, out) : pool_avx2_whole_10(s, in, out);
    pool_avx2_body(s, in, out, 0, s->aff_out != NULL, 0);
}
#endif

static void affine(const Stage *s, const float *in, void *out) {
#if defined(BF_X86)
    if (isa_current == ISA_AVX512) return affine_avx512(s, in, out);
    if (isa_current == ISA_AVX2) return affine_avx2(s, in, out);
#endif
    affine_portable(s, in, out);
}

#if defined(BF_X86)
__attribute__((target(AVX512))) static void add_avx512(const Stage *s, const float *a, const float *b, float *out) {
    const int word_signs = s->aff_out && s->cout <= 64; /* the fused signs' constants in registers */
    Signs64 g = {0};
    if (word_signs) g = fused_signs64(s);
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            const float *pa = a + s->in_off + y * s->in_row + x * s->in_pix;
            const float *pb = b + s->in2_off + y * s->in2_row + x * s->in2_pix;
            float *o = out + s->out_off + y * s->out_row + x * s->out_pix;
            uint64_t word = 0;
            if (word_signs) {
                for (int64_t c = 0; c < g.chunks; c++) {
                    const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(g.valid[c], pa + 16 * c),
                                                   _mm512_maskz_loadu_ps(g.valid[c], pb + 16 * c));
                    _mm512_mask_storeu_ps(o + 16 * c, g.valid[c], v);
                    word |= signs64_chunk(&g, c, v);
                }
                s->aff_out[s->aff_off + y * s->aff_row + x] = word;
                continue;
            }
            for (int64_t c = 0; c < s->cout; c += 16) {
                const __mmask16 m = lanes16(s->cout - c);
                const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, pa + c), _mm512_maskz_loadu_ps(m, pb + c));
                _mm512_mask_storeu_ps(o + c, m, v);
                if (!s->aff_out) continue;
                word = affine_bits16(s, v, c, m, y, x, word);
            }
        }
}

/* The max over one window of 16 channels from c (a -inf border never wins). */
__attribute__((target(AVX512))) static inline __m512 window_max16(const Stage *s, const float *first, int64_t c,
                                                                   __mmask16 m) {
    __m512 v = _mm512_maskz_loadu_ps(m, first + c);
    for (int64_t dy = 0; dy < s->size; dy++)
        for (int64_t dx = 0; dx < s->size; dx++)
            v = _mm512_max_ps(_mm512_maskz_loadu_ps(m, first + dy * s->in_row + dx * s->in_pix + c), v);
    return v;
}

__attribute__((target(AVX512))) static void pool_avx512(const Stage *s, const float *in, float *out) {
    const int word_signs = s->aff_out && s->cout <= 64; /* the fused signs' constants in registers */
    Signs64 g = {0};
    if (word_signs) g = fused_signs64(s);
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            const float *first = in + s->in_off + y * s->stride * s->in_row + x * s->stride * s->in_pix;
            float *o = out + s->out_off + y * s->out_row + x * s->out_pix;
            uint64_t word = 0;
            if (word_signs) {
                for (int64_t c = 0; c < g.chunks; c++) {
                    const __m512 v = window_max16(s, first, 16 * c, g.valid[c]);
                    _mm512_mask_storeu_ps(o + 16 * c, g.valid[c], v);
                    word |= signs64_chunk(&g, c, v);
                }
                s->aff_out[s->aff_off + y * s->aff_row + x] = word;
                continue;
            }
            for (int64_t c = 0; c < s->cout; c += 16) {
                const __mmask16 m = lanes16(s->cout - c);
                const __m512 v = window_max16(s, first, c, m);
                _mm512_mask_storeu_ps(o + c, m, v);
                if (!s->aff_out) continue;
                word = affine_bits16(s, v, c, m, y, x, word);
            }
        }
}
#endif

static void pool_f32(const Stage *s, const float *in, float *out) {
#if defined(BF_X86)
    if (isa_current == ISA_AVX512) return pool_avx512(s, in, out);
    if (isa_current == ISA_AVX2) return pool_avx2(s, in, out);
#endif
    pool_portable(s, in, out);
}

static void add_f32(const Stage *s, const float *a, const float *b, float *out) {
#if defined(BF_X86)
    if (isa_current == ISA_AVX512) return add_avx512(s, a, b, out);
    if (isa_current == ISA_AVX2) return add_avx2(s, a, b, out);
#endif
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++) {
            const float *pa = a + s->in_off + y * s->in_row + x * s->in_pix;
            const float *pb = b + s->in2_off + y * s->in2_row + x * s->in2_pix;
            float *o = out + s->out_off + y * s->out_row + x * s->out_pix;
            for (int64_t c = 0; c < s->cout; c++) o[c] = pa[c] + pb[c];
            affine_bits(s, o, y, x);
        }
}

/* nearest-neighbour upsampling by `size` */
static void upsample_f32(const Stage *s, const float *in, float *out) {
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++)
            memcpy(out + s->out_off + y * s->out_row + x * s->out_pix,
                   in + s->in_off + (y / s->size) * s->in_row + (x / s->size) * s->in_pix, 4 * (size_t)s->cout);
}

static void sign_pack(const Stage *s, const float *in, uint64_t *out) {
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo; x++)
            for (int64_t w = 0; w < s->words; w++) {
                uint64_t m = 0;
                const float *ip = in + s->in_off + y * s->in_row + x * s->in_pix + w * 64;
                const int64_t n = s->cin - w * 64 < 64 ? s->cin - w * 64 : 64;
                for (int64_t c = 0; c < n; c++) m |= (uint64_t)(ip[c] >= 0) << c;
                out[s->out_off + w * s->out_plane + y * s->out_row + x] = m;
            }
}

/* NCHW image -> HWC buffer interior. */
static void take_input(const Stage *s, const float *image, float *out) {
    if (s->cin == 1) { /* HWC is CHW: copy rows */
        for (int64_t y = 0; y < s->ho; y++) memcpy(out + s->out_off + y * s->out_row, image + y * s->wo, 4 * s->wo);
        return;
    }
    for (int64_t c = 0; c < s->cin; c++)
        for (int64_t y = 0; y < s->ho; y++)
            for (int64_t x = 0; x < s->wo; x++)
                out[s->out_off + y * s->out_row + x * s->out_pix + c] = image[(c * s->ho + y) * s->wo + x];
}

/* uint8 HWC crop -> HWC buffer interior, normalized as InputSpec.normalize does it in float32:
 * (x - mean) / std, a division (not a multiplication by 1 / std) so that the values are the same. */
static void take_crop(const Stage *s, const uint8_t *crop, float mean, float std, float *out) {
    const int64_t row = s->wo * s->cin;
    for (int64_t y = 0; y < s->ho; y++) {
        float *dst = out + s->out_off + y * s->out_row;
        const uint8_t *src = crop + y * row;
        if (s->out_pix == s->cin) /* pixels packed in the row: one run of row values */
            for (int64_t i = 0; i < row; i++) dst[i] = ((float)src[i] - mean) / std;
        else
            for (int64_t x = 0; x < s->wo; x++)
                for (int64_t c = 0; c < s->cin; c++)
                    dst[x * s->out_pix + c] = ((float)src[x * s->cin + c] - mean) / std;
    }
}

/* ------------------------------------------------------------------------------------------- */
/* The Plan type. */

typedef struct {
    PyObject_HEAD
    Stage *stages;
    Py_ssize_t nstages;
    void **buffers;
    Py_ssize_t nbuffers;
    Py_buffer *views; /* tensors the stages point into, released on dealloc */
    Py_ssize_t nviews;
    int64_t input_size, output[7]; /* output: buf, c, h, w, off, row, pix */
    float *smoothed;                 /* twice the output's size: the maps smoothed before decoding */
    /* held by a run (with the GIL released): the buffers hold one run's values, so threads calling
     * one model take turns instead of overwriting each other's (which gave wrong points, silently) */
    PyThread_type_lock lock;
} Plan;

static void plan_dealloc(Plan *self) {
    for (Py_ssize_t i = 0; i < self->nviews; i++) PyBuffer_Release(&self->views[i]);
    for (Py_ssize_t i = 0; i < self->nbuffers; i++) free(self->buffers[i]);
    for (Py_ssize_t i = 0; self->stages && i < self->nstages; i++) {
        PyMem_Free(self->stages[i].weight32);
        PyMem_Free(self->stages[i].nib_weight);
        PyMem_Free(self->stages[i].nib_in);
        PyMem_Free(self->stages[i].bias);
        PyMem_Free(self->stages[i].fix_bias);
        PyMem_Free(self->stages[i].range32);
        PyMem_Free(self->stages[i].fix_range32);
        PyMem_Free(self->stages[i].fix_block);
    }
    PyMem_Free(self->views);
    PyMem_Free(self->buffers);
    PyMem_Free(self->stages);
    PyMem_Free(self->smoothed);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const void *borrow(Plan *self, PyObject *obj, Py_ssize_t itemsize, Py_ssize_t need, const char *what,
                          Py_ssize_t index) {
    if (obj == Py_None) {
        if (need > 0) PyErr_Format(PyExc_ValueError, "stage %zd: %s missing", index, what);
        return NULL;
    }
    Py_buffer *view = &self->views[self->nviews];
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    self->nviews++;
    if (view->len < need * itemsize) {
        PyErr_Format(PyExc_ValueError, "stage %zd: %s has %zd bytes, needs %zd", index, what, view->len,
                     need * itemsize);
        return NULL;
    }
    return view->buf;
}

static int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((1 - v) / 2); }

/* The mismatch counts m with lo <= k - 2m - fix <= hi: [bottom, top] (bottom > top: none). */
static void mismatch_range(int64_t k, int64_t lo, int64_t hi, int64_t fix, int64_t *bottom, int64_t *top) {
    *bottom = -floor_div2(hi - k + fix), *top = floor_div2(k - fix - lo); /* ceil, floor of halves */
}

/* Channel o's counts that are on (padding channels never are). */
static void channel_range(const Stage *s, int64_t o, int64_t fix, int64_t *bottom, int64_t *top) {
    mismatch_range(s->cin * s->kh * s->kw, o < s->cout ? s->lo[o] : 1, o < s->cout ? s->hi[o] : 0, fix, bottom, top);
}

/* Whether channel o is on for m >= bottom (its dot products have no lower bound), not m <= top:
 * its sign bit is flipped. Decided by the thresholds alone, the same at every pixel. */
static int flipped_channel(const Stage *s, int64_t o) {
    return o < s->cout && s->lo[o] <= s->hi[o] && s->lo[o] <= -s->cin * s->kh * s->kw;
}

/* The starting count whose final sign bit is the output (see Stage.bias): on <=> m + bias < 0 for
 * m <= top, on <=> m + bias >= 0 for a flipped channel; where no count is on, a bias that keeps the
 * output off either way. */
static int64_t count_bias(const Stage *s, int64_t o, int64_t bottom, int64_t top) {
    const int flipped = flipped_channel(s, o);
    if (bottom > top) return flipped ? -((int64_t)1 << 40) : 0;
    return flipped ? -bottom : -top - 1;
}

/* An int64 count as int32 for the narrow kernels; "never" stays far below any count. */
static int32_t narrow32(int64_t v) { return v < -((int64_t)1 << 30) ? -(1 << 30) : (int32_t)v; }

/* The narrow kernels' [-base | span] of channel o, into r[0] and r[step]. */
static void narrow_range(const Stage *s, int64_t o, int64_t fix, int32_t *r, int64_t step) {
    int64_t bottom, top;
    channel_range(s, o, fix, &bottom, &top);
    r[0] = bottom <= top ? narrow32(-bottom) : -(1 << 30);
    r[step] = bottom <= top ? narrow32(top - bottom) : 0;
}

/* Stage.bias (range32 for narrow stages), and with padding their per-pixel tables, from lo/hi and
 * the padding table fix [class][x][cout_pad]. */
static int output_ranges(Stage *s) {
    const int64_t k = s->cin * s->kh * s->kw, cp = s->cout_pad, nxblocks = (s->wo + PX - 1) / PX;
    if (s->weight32) {
        if (!(s->range32 = PyMem_Calloc(2 * cp, sizeof(int32_t)))) return PyErr_NoMemory(), -1;
        for (int64_t o = 0; o < cp; o++) narrow_range(s, o, 0, s->range32 + o, cp);
        if (!s->fix) return 0;
        if (!(s->fix_range32 = PyMem_Calloc(s->fix_classes * s->fix_w * 2 * cp, sizeof(int32_t))))
            return PyErr_NoMemory(), -1;
        for (int64_t c = 0; c < s->fix_classes; c++)
            for (int64_t x = 0; x < s->fix_w; x++)
                for (int64_t o = 0; o < cp; o++)
                    narrow_range(s, o, s->fix[(c * s->fix_w + x) * cp + o],
                                 s->fix_range32 + (c * s->fix_w + x) * 2 * cp + o, cp);
        return 0;
    }
    if (!(s->bias = PyMem_Calloc(cp + cp / BLOCK, sizeof(int64_t)))) return PyErr_NoMemory(), -1;
    for (int64_t o = 0; o < cp; o++) {
        int64_t bottom, top;
        channel_range(s, o, 0, &bottom, &top);
        if (o < s->cout && s->lo[o] <= s->hi[o] && s->lo[o] > -k && s->hi[o] < k) s->two_sided = 1;
        s->bias[o] = count_bias(s, o, bottom, top);
        if (flipped_channel(s, o)) s->bias[cp + o / BLOCK] |= (int64_t)1 << (o % BLOCK);
    }
    if (!s->fix) return 0;
    s->fix_bias = PyMem_Calloc(s->fix_classes * cp * s->fix_w, sizeof(int64_t));
    s->fix_block = PyMem_Calloc(s->fix_classes * nxblocks, 1);
    if (!s->fix_bias || !s->fix_block) return PyErr_NoMemory(), -1;
    for (int64_t c = 0; c < s->fix_classes; c++)
        for (int64_t x = 0; x < s->fix_w; x++)
            for (int64_t o = 0; o < cp; o++) {
                const int32_t v = s->fix[(c * s->fix_w + x) * cp + o];
                int64_t bottom, top;
                channel_range(s, o, v, &bottom, &top);
                s->fix_bias[(c * cp + o) * s->fix_w + x] = count_bias(s, o, bottom, top);
                if (v && x < s->wo) s->fix_block[c * nxblocks + x / PX] = 1;
            }
    return 0;
}

/* A binary conv's nib_weight and nib_in (see Stage); -1 without memory. The input words a run reads:
 * from in_off, the last word plane's rows up to the last tap's row, the last pixel block's PX words. */
static int split_nibbles(Stage *s) {
    const int64_t n = s->kh * s->kw * (s->weight32 ? 1 : s->words) * s->cout_pad;
    s->nib_len = (s->words - 1) * s->in_plane + (s->ho + s->kh - 2) * s->in_row + s->wo + s->kw + PX - 2;
    s->nib_in = PyMem_Malloc(16 * (size_t)s->nib_len);
    s->nib_weight = PyMem_Malloc((s->weight32 ? 8 : 16) * (size_t)n);
    if (!s->nib_in || !s->nib_weight) return -1;
    if (s->weight32 && s->cin <= 16) { /* 16-bit words: a tap's 16 channels fill one register as they lie */
        uint16_t *w = s->nib_weight;
        for (int64_t j = 0; j < n; j++) {
            w[j] = (uint16_t)(s->weight32[j] & (uint32_t)LOW_NIBBLES);
            w[n + j] = (uint16_t)((s->weight32[j] >> 4) & (uint32_t)LOW_NIBBLES);
        }
    } else if (s->weight32) {
        uint32_t *w = s->nib_weight;
        for (int64_t j = 0; j < n; j++) {
            w[j] = s->weight32[j] & (uint32_t)LOW_NIBBLES;
            w[n + j] = (s->weight32[j] >> 4) & (uint32_t)LOW_NIBBLES;
        }
    } else {
        split_nibble_words(s->weight, n, s->nib_weight, (uint64_t *)s->nib_weight + n);
    }
    return 0;
}

/* Plan(stages, buffers, output, input_size)
 *   stages: [(params: tuple of NPARAMS ints, weight, scale, shift, lo, hi, fix, row_class, aff_scale,
 *   aff_shift)], tensors
 *   None or buffers
 *   buffers: [bytes-like initial contents (borders filled, interiors zero), slack included]
 *   output: (buf, c, h, w, off, row, pix) of the float HWC result; input_size: floats per image */
static int plan_init(Plan *self, PyObject *args, PyObject *kwds) {
    PyObject *stages, *buffers, *output;
    long long input_size;
    if (!PyArg_ParseTuple(args, "O!O!O!L", &PyList_Type, &stages, &PyList_Type, &buffers, &PyTuple_Type, &output,
                          &input_size))
        return -1;
    if (self->stages) {
        PyErr_SetString(PyExc_RuntimeError, "Plan is already initialized");
        return -1;
    }
    self->input_size = input_size;
    if (!(self->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        return -1;
    }
    self->nbuffers = PyList_GET_SIZE(buffers);
    self->buffers = PyMem_Calloc(self->nbuffers ? self->nbuffers : 1, sizeof(void *));
    self->nstages = PyList_GET_SIZE(stages);
    self->stages = PyMem_Calloc(self->nstages ? self->nstages : 1, sizeof(Stage));
    self->views = PyMem_Calloc(NTENSORS * self->nstages + 1, sizeof(Py_buffer));
    if (!self->buffers || !self->stages || !self->views) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->nbuffers; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(buffers, i), &view, PyBUF_C_CONTIGUOUS) < 0) {
            return -1;
        }
        const size_t size = ((size_t)view.len + 63) / 64 * 64;
        self->buffers[i] = aligned_alloc(64, size ? size : 64);
        if (!self->buffers[i]) {
            PyBuffer_Release(&view);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(self->buffers[i], view.buf, view.len);
        PyBuffer_Release(&view);
    }
    for (Py_ssize_t i = 0; i < self->nstages; i++) {
        PyObject *item = PyList_GET_ITEM(stages, i), *params;
        PyObject *weight, *scale, *shift, *lo, *hi, *fix, *row_class, *aff_scale, *aff_shift, *aff2_scale, *aff2_shift;
        if (!PyArg_ParseTuple(item, "O!OOOOOOOOOOO", &PyTuple_Type, &params, &weight, &scale, &shift, &lo, &hi, &fix,
                              &row_class, &aff_scale, &aff_shift, &aff2_scale, &aff2_shift) ||
            PyTuple_GET_SIZE(params) != NPARAMS) {
            PyErr_Format(PyExc_ValueError,
                         "stage %zd: expected (params[%d], weight, scale, shift, lo, hi, fix, row_class, aff_scale, "
                         "aff_shift, aff2_scale, aff2_shift)", i, NPARAMS);
            return -1;
        }
        Stage *s = &self->stages[i];
        int64_t *fields = &s->kind;
        for (int f = 0; f < NPARAMS; f++) {
            fields[f] = PyLong_AsLongLong(PyTuple_GET_ITEM(params, f));
            if (fields[f] == -1 && PyErr_Occurred()) {
                return -1;
            }
        }
        if (s->kind < ST_INPUT || s->kind >= ST_KINDS || s->in_buf < -1 || s->in_buf >= self->nbuffers ||
            s->in2_buf < -1 || s->in2_buf >= self->nbuffers || s->aff_buf >= self->nbuffers ||
            (s->kind != ST_INPUT && s->in_buf < 0) ||
            (s->kind == ST_ADD && s->in2_buf < 0) || s->out_buf < 0 || s->out_buf >= self->nbuffers ||
            s->cout_pad % BLOCK || (s->cout + 63) / 64 > MAXWORDS || s->stride < 1 || s->size < 1 ||
            (s->pool && (s->pool != 2 || s->kind != ST_BCONV || s->out_mode != OUT_FLOAT || s->ho % 2 || s->wo % 2))) {
            PyErr_Format(PyExc_ValueError, "stage %zd: inconsistent parameters", i);
            return -1;
        }
        const int64_t taps = s->kh * s->kw;
        if (s->kind == ST_CONV || s->kind == ST_BCONV) {
            const int bin = s->kind == ST_BCONV;
            s->weight = borrow(self, weight, bin ? 8 : 4, taps * (bin ? s->words : s->cin) * s->cout_pad, "weight", i);
            s->scale = borrow(self, scale, 4, s->cout, "scale", i);
            s->shift = borrow(self, shift, 4, s->cout, "shift", i);
            if (!s->weight || !s->scale || !s->shift) {
                return -1;
            }
            if (bin && s->words == 1 && s->cin <= 32) {
                const int64_t n = taps * s->cout_pad;
                if (!(s->weight32 = PyMem_Malloc(4 * n))) {
                    PyErr_NoMemory();
                    return -1;
                }
                for (int64_t j = 0; j < n; j++) s->weight32[j] = (uint32_t)((const uint64_t *)s->weight)[j];
            }
            if (bin && split_nibbles(s) < 0) {
                PyErr_NoMemory();
                return -1;
            }
            if (bin && s->out_mode == OUT_BITS) {
                s->lo = borrow(self, lo, 4, s->cout, "lo", i);
                s->hi = borrow(self, hi, 4, s->cout, "hi", i);
                if (!s->lo || !s->hi) {
                    return -1;
                }
            }
            if (bin && fix != Py_None) {
                s->row_class = borrow(self, row_class, 4, s->ho, "row_class", i);
                if (!s->row_class) return -1;
                int64_t classes = 0;
                for (int64_t y = 0; y < s->ho; y++) {
                    if (s->row_class[y] < 0) {
                        PyErr_Format(PyExc_ValueError, "stage %zd: negative padding row class", i);
                        return -1;
                    }
                    classes = s->row_class[y] >= classes ? s->row_class[y] + 1 : classes;
                }
                if (s->fix_w < s->wo + PX) {
                    PyErr_Format(PyExc_ValueError, "stage %zd: padding fix rows too short", i);
                    return -1;
                }
                s->fix = borrow(self, fix, 4, classes * s->cout_pad * s->fix_w, "fix", i);
                if (!s->fix) return -1;
                s->fix_classes = classes;
            }
            if (bin && s->out_mode == OUT_BITS && output_ranges(s) < 0) return -1;
        }
        if (s->in2_buf >= 0) s->in2 = self->buffers[s->in2_buf]; /* an ADD's other side, or a fused sum */
        if (s->aff_buf >= 0 && (s->kind == ST_BCONV || s->kind == ST_CONV || s->kind == ST_ADD || s->kind == ST_POOL) &&
            s->out_mode == OUT_FLOAT) {
            s->aff_out = self->buffers[s->aff_buf];
            s->aff_scale = borrow(self, aff_scale, 4, s->cout, "aff_scale", i);
            s->aff_shift = borrow(self, aff_shift, 4, s->cout, "aff_shift", i);
            if (!s->aff_scale || !s->aff_shift) return -1;
        }
        if (s->no_store && (s->kind != ST_CONV || !s->aff_out)) { /* only the fused signs are written */
            PyErr_Format(PyExc_ValueError, "stage %zd: a float value left unstored needs a real conv with a fused sign", i);
            return -1;
        }
        if (s->aff2_buf >= 0) { /* a real conv's second sign */
            if (s->kind != ST_CONV || !s->aff_out || s->aff2_buf >= self->nbuffers ||
                2 * ((s->cout + 63) / 64) > MAXWORDS) {
                PyErr_Format(PyExc_ValueError, "stage %zd: a second fused sign needs a real conv with a first", i);
                return -1;
            }
            s->aff2_out = self->buffers[s->aff2_buf];
            s->aff2_scale = borrow(self, aff2_scale, 4, s->cout, "aff2_scale", i);
            s->aff2_shift = borrow(self, aff2_shift, 4, s->cout, "aff2_shift", i);
            if (!s->aff2_scale || !s->aff2_shift) return -1;
        }
        if (s->kind == ST_AFFINE) {
            s->scale = borrow(self, scale, 4, s->cout, "scale", i);
            s->shift = borrow(self, shift, 4, s->cout, "shift", i);
            if (!s->scale || !s->shift) return -1;
        }
    }
    for (int f = 0; f < 7; f++) {
        self->output[f] = PyLong_AsLongLong(PyTuple_GetItem(output, f));
        if (PyErr_Occurred()) return -1;
    }
    if (self->output[0] < 0 || self->output[0] >= self->nbuffers) {
        PyErr_SetString(PyExc_ValueError, "output buffer out of range");
        return -1;
    }
    self->smoothed = PyMem_Malloc(sizeof(float) * 2 * (size_t)(self->output[1] * self->output[2] * self->output[3]));
    if (!self->smoothed) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A network input: float32 NCHW image, a uint8 HWC crop with its normalization, or a gray image with
 * the crop's place in it and the normalization. */
typedef struct {
    const float *image;
    const uint8_t *crop;
    float mean, std;
    const uint8_t *gray; /* or a gray image (height x width, rows `width` apart) sampled at the crop's pixels */
    int64_t height, width;
    const double *matrix; /* image -> crop, 2 x 3 (as for cv2.warpAffine) */
} Input;

/* The inverse of an image -> crop matrix (2 x 3), in double as cv2.warpAffine computes it. */
static void crop_to_image(const double *f, double m[6]) {
    const double det = f[0] * f[4] - f[1] * f[3], d = det != 0 ? 1. / det : 0;
    m[0] = f[4] * d, m[1] = f[1] * -d, m[3] = f[3] * -d, m[4] = f[0] * d;
    m[2] = -m[0] * f[2] - m[1] * f[5], m[5] = -m[3] * f[2] - m[4] * f[5];
}

/* Crop pixels [from, to) of one row of take_axis_aligned: rows `upper` and `lower` with their weights,
 * each column's two taps (index clamped inside the row, weight 0 outside it). */
static void axis_row(const uint8_t *upper, const uint8_t *lower, int64_t weight_upper, int64_t weight_lower,
                     const int32_t *left, const int32_t *right, const int32_t *weight_left,
                     const int32_t *weight_right, int64_t from, int64_t to, const float *level, float *dst,
                     int64_t pix) {
    for (int64_t x = from; x < to; x++) {
        const int64_t a = left[x], b = right[x], wa = weight_left[x], wb = weight_right[x];
        const int64_t top = wa * upper[a] + wb * upper[b], bottom = wa * lower[a] + wb * lower[b];
        dst[x * pix] = level[(weight_upper * top + weight_lower * bottom + 512) >> 10];
    }
}

#if defined(BF_X86)
/* axis_row for columns whose two taps are both inside the row (right = left + 1), 16 at a time, into a
 * dense row: one 4-byte gather per image row reads both taps. The caller makes sure that the bytes
 * read past a row's end are still in the image (the lower row is not its last). The same integers;
 * the normalization a correctly rounded division as in `level`. */
__attribute__((target(AVX512))) static void axis_row_avx512(const uint8_t *upper, const uint8_t *lower,
                                                           int32_t weight_upper, int32_t weight_lower,
                                                           const int32_t *left, const int32_t *weight_left,
                                                           const int32_t *weight_right, int64_t from, int64_t to,
                                                           float mean, float std, float *dst) {
    const __m512i byte = _mm512_set1_epi32(0xff), wu = _mm512_set1_epi32(weight_upper);
    const __m512i wl = _mm512_set1_epi32(weight_lower), half = _mm512_set1_epi32(512);
    const __m512 vmean = _mm512_set1_ps(mean), vstd = _mm512_set1_ps(std);
    for (int64_t x = from; x < to; x += 16) {
        const __mmask16 m = lanes16(to - x);
        const __m512i at = _mm512_maskz_loadu_epi32(m, left + x);
        const __m512i u = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, upper, 1);
        const __m512i l = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, lower, 1);
        const __m512i wa = _mm512_maskz_loadu_epi32(m, weight_left + x), wb = _mm512_maskz_loadu_epi32(m, weight_right + x);
        const __m512i top = _mm512_add_epi32(_mm512_mullo_epi32(wa, _mm512_and_si512(u, byte)),
                                              _mm512_mullo_epi32(wb, _mm512_and_si512(_mm512_srli_epi32(u, 8), byte)));
        const __m512i bottom = _mm512_add_epi32(_mm512_mullo_epi32(wa, _mm512_and_si512(l, byte)),
                                                _mm512_mullo_epi32(wb, _mm512_and_si512(_mm512_srli_epi32(l, 8), byte)));
        const __m512i v = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(wu, top), _mm512_mullo_epi32(wl, bottom)), half), 10);
        _mm512_mask_storeu_ps(dst + x, m, _mm512_div_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(v), vmean), vstd));
    }
}
#endif

/* take_affine for a matrix without rotation (m1 = m3 = 0): a crop row reads two image rows, each
 * column the same two taps of them. The same arithmetic, without branches: a tap outside the image
 * gets weight 0 (its index clamped inside), which is what OpenCV's zero taps amount to. */
static void take_axis_aligned(const Stage *s, const Input *in, float *out, const int64_t *step_x, int64_t x0,
                              double m4, double m5, const float *level) {
    const int64_t h = in->height, w = in->width;
    int32_t left[s->wo], right[s->wo], weight_left[s->wo], weight_right[s->wo];
    int64_t inside_from = s->wo, inside_to = 0; /* the columns with both taps inside: one run (sx is monotonic) */
    for (int64_t x = 0; x < s->wo; x++) {
        const int64_t fx = (x0 + step_x[x]) >> 5, sx = fx >> 5, ax = fx & 31;
        left[x] = (int32_t)(sx < 0 ? 0 : sx >= w ? w - 1 : sx);
        right[x] = (int32_t)(sx + 1 < 0 ? 0 : sx + 1 >= w ? w - 1 : sx + 1);
        weight_left[x] = (int32_t)(sx >= 0 && sx < w ? 32 - ax : 0);
        weight_right[x] = (int32_t)(sx + 1 >= 0 && sx + 1 < w ? ax : 0);
        if (sx >= 0 && sx + 1 < w) inside_from = x < inside_from ? x : inside_from, inside_to = x + 1;
    }
    for (int64_t y = 0; y < s->ho; y++) {
        const int64_t fy = (llrint((m4 * y + m5) * 1024) + 16) >> 5, sy = fy >> 5, ay = fy & 31;
        const uint8_t *upper = in->gray + (sy < 0 ? 0 : sy >= h ? h - 1 : sy) * w;
        const uint8_t *lower = in->gray + (sy + 1 < 0 ? 0 : sy + 1 >= h ? h - 1 : sy + 1) * w;
        const int64_t weight_upper = sy >= 0 && sy < h ? 32 - ay : 0, weight_lower = sy + 1 >= 0 && sy + 1 < h ? ay : 0;
        float *dst = out + s->out_off + y * s->out_row;
        const int64_t pix = s->out_pix;
#if defined(BF_X86)
        /* rows whose lower row is not the image's last: the gathers' extra bytes lie in the next row */
        if (isa_current == ISA_AVX512 && pix == 1 && sy >= 0 && sy + 2 < h && inside_from < inside_to) {
            axis_row(upper, lower, weight_upper, weight_lower, left, right, weight_left, weight_right, 0, inside_from,
                     level, dst, pix);
            axis_row_avx512(upper, lower, (int32_t)weight_upper, (int32_t)weight_lower, left, weight_left,
                            weight_right, inside_from, inside_to, in->mean, in->std, dst);
            axis_row(upper, lower, weight_upper, weight_lower, left, right, weight_left, weight_right, inside_to,
                     s->wo, level, dst, pix);
            continue;
        }
#endif
        axis_row(upper, lower, weight_upper, weight_lower, left, right, weight_left, weight_right, 0, s->wo, level,
                 dst, pix);
    }
}

/* The crop cv2.warpAffine(gray, matrix, (wo, ho), INTER_LINEAR, BORDER_CONSTANT 0) makes, bit for bit,
 * normalized as take_crop normalizes a uint8 crop, without making the crop. OpenCV's arithmetic (its
 * documented fixed point, imgwarp.cpp): it inverts the matrix in double as below; source positions are
 * rounded to 1/1024 pixel, then floored to 1/32 (each row's offset rounded once, each column's step
 * rounded once, both plus a half 32nd); the bilinear weights are products of 32nds, the sum rounded half
 * up; taps outside the image are 0, and a pixel with no tap inside is 0. */
static void take_affine(const Stage *s, const Input *in, float *out) {
    double m[6];
    crop_to_image(in->matrix, m);
    const double m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5];
    const int64_t h = in->height, w = in->width;
    const uint8_t *g = in->gray;
    int64_t step_x[s->wo], step_y[s->wo]; /* each column's rounded step, once per crop (llrint is a call) */
    for (int64_t x = 0; x < s->wo; x++) step_x[x] = llrint(m0 * x * 1024);
    float level[256]; /* each grey level normalized as take_crop does it, 256 divisions instead of one a pixel */
    for (int v = 0; v < 256; v++) level[v] = ((float)v - in->mean) / in->std;
    /* no rotation (every crop Landmarker makes), column indices in int32 */
    if (m1 == 0 && m3 == 0 && fabs(m2) < 1e12 && fabs(m5) < 1e12 && in->width < INT32_MAX)
        return take_axis_aligned(s, in, out, step_x, llrint(m2 * 1024) + 16, m4, m5, level);
    for (int64_t x = 0; x < s->wo; x++) step_y[x] = llrint(m3 * x * 1024);
    for (int64_t y = 0; y < s->ho; y++) {
        float *dst = out + s->out_off + y * s->out_row;
        const double row_x = (m1 * y + m2) * 1024, row_y = (m4 * y + m5) * 1024;
        if (fabs(row_x) > 1e15 || fabs(row_y) > 1e15) { /* far outside any image */
            for (int64_t x = 0; x < s->wo; x++) dst[x * s->out_pix] = level[0];
            continue;
        }
        const int64_t x0 = llrint(row_x) + 16, y0 = llrint(row_y) + 16;
        for (int64_t x = 0; x < s->wo; x++) {
            const int64_t fx = (x0 + step_x[x]) >> 5, fy = (y0 + step_y[x]) >> 5;
            const int64_t sx = fx >> 5, sy = fy >> 5, ax = fx & 31, ay = fy & 31;
            int64_t v = 0;
            if (sx >= -1 && sx < w && sy >= -1 && sy < h) { /* at least one of the four taps inside */
                int64_t p00, p01, p10, p11;
                const int64_t at = sy * w + sx;
                if (sx >= 0 && sx + 1 < w && sy >= 0 && sy + 1 < h)
                    p00 = g[at], p01 = g[at + 1], p10 = g[at + w], p11 = g[at + w + 1];
                else { /* on the border: taps outside are 0 */
                    const int left = sx >= 0, right = sx + 1 < w, top = sy >= 0, bottom = sy + 1 < h;
                    p00 = top && left ? g[at] : 0, p01 = top && right ? g[at + 1] : 0;
                    p10 = bottom && left ? g[at + w] : 0, p11 = bottom && right ? g[at + w + 1] : 0;
                }
                v = ((32 - ax) * (32 - ay) * p00 + ax * (32 - ay) * p01 + (32 - ax) * ay * p10 + ax * ay * p11 + 512) >> 10;
            }
            dst[x * s->out_pix] = level[v];
        }
    }
}

/* Clears the upper halves of the vector registers. GCC leaves out the vzeroupper at the exit of some
 * AVX-512 kernels (the large ones), and while the upper state is dirty every later SSE instruction in
 * the process pays a merge: libm's exp and log ran 5x slower in the heatmap decoder after a network. */
#if defined(BF_X86)
__attribute__((target("avx"))) static void clean_upper(void) { _mm256_zeroupper(); }
#endif

static void run_stage(Plan *self, Py_ssize_t i, const Input *input) {
    {
        const Stage *s = &self->stages[i];
        void *in = s->in_buf >= 0 ? self->buffers[s->in_buf] : NULL, *out = self->buffers[s->out_buf];
        switch (s->kind) {
        case ST_INPUT:
            if (input->gray)
                take_affine(s, input, out);
            else if (input->crop)
                take_crop(s, input->crop, input->mean, input->std, out);
            else
                take_input(s, input->image, out);
            break;
        case ST_CONV: conv_f32(s, in, out); break;
        case ST_BCONV: bconv(s, in, out); break;
        case ST_POOL: pool_f32(s, in, out); break;
        case ST_BPOOL: pool_bits(s, in, out); break;
        case ST_SIGN: sign_pack(s, in, out); break;
        case ST_AFFINE: affine(s, in, out); break;
        case ST_ADD: add_f32(s, in, s->in2, out); break;
        case ST_UPSAMPLE: upsample_f32(s, in, out); break;
        }
    }
#if defined(BF_X86)
    if (isa_current != ISA_PORTABLE) clean_upper();
#endif
}

static void run_stages(Plan *self, const Input *input) {
    for (Py_ssize_t i = 0; i < self->nstages; i++) run_stage(self, i, input);
}

/* Swaps each row's pixels x and w - 1 - x of the input stage's output (its values, not its border). */
static void mirror_input(Plan *self) {
    const Stage *s = &self->stages[0];
    float *base = (float *)self->buffers[s->out_buf] + s->out_off;
    for (int64_t y = 0; y < s->ho; y++)
        for (int64_t x = 0; x < s->wo / 2; x++) {
            float *a = base + y * s->out_row + x * s->out_pix, *b = base + y * s->out_row + (s->wo - 1 - x) * s->out_pix;
            for (int64_t c = 0; c < s->cout; c++) {
                const float t = a[c];
                a[c] = b[c], b[c] = t;
            }
        }
}

/* The network on one input; with `mirror` (a test-time flip), run again on the input mirrored left-right
 * and each output map averaged with the second run's map of channel mirror[c] mirrored back (a left eye's
 * map is the mirror image's right eye's), (a + b) * 0.5 in float32 as the Python predictor computes it.
 * The input is mirrored where the input stage left it (each value has a buffer of its own: plan.py). */
static void run_network(Plan *self, const Input *input, const int32_t *mirror) {
    run_stages(self, input);
    if (!mirror) return;
    const int64_t *o = self->output;
    const int64_t channels = o[1], height = o[2], width = o[3], row = o[5], pix = o[6];
    float *maps = (float *)self->buffers[o[0]] + o[4], *first = self->smoothed; /* dense HWC, smoothing comes later */
    for (int64_t y = 0; y < height; y++)
        for (int64_t x = 0; x < width; x++) memcpy(first + (y * width + x) * channels, maps + y * row + x * pix, 4 * channels);
    mirror_input(self);
    for (Py_ssize_t i = 1; i < self->nstages; i++) run_stage(self, i, input);
    for (int64_t y = 0; y < height; y++)
        for (int64_t x = 0; x < width; x++) {
            float *a = first + (y * width + x) * channels;
            const float *b = maps + y * row + (width - 1 - x) * pix;
            for (int64_t c = 0; c < channels; c++) a[c] = (a[c] + b[mirror[c]]) * 0.5f;
        }
    for (int64_t y = 0; y < height; y++)
        for (int64_t x = 0; x < width; x++) memcpy(maps + y * row + x * pix, first + (y * width + x) * channels, 4 * channels);
}

static void run_one(Plan *self, const Input *input, const int32_t *mirror, float *result) {
    run_network(self, input, mirror);
    /* the output value, HWC in its buffer, leaves as CHW (fields in locals: `result` may alias them) */
    const int64_t *o = self->output;
    const int64_t channels = o[1], height = o[2], width = o[3], row = o[5], pix = o[6], plane = height * width;
    const float *buf = (const float *)self->buffers[o[0]] + o[4];
    for (int64_t c = 0; c < channels; c++)
        for (int64_t y = 0; y < height; y++) {
            const float *src = buf + y * row + c;
            float *dst = result + c * plane + y * width;
            for (int64_t x = 0; x < width; x++) dst[x] = src[x * pix];
        }
}

/* plan.run(images, out): images float32 (B, input_size) C-contiguous, out float32 (B, output size). */
static PyObject *plan_run(Plan *self, PyObject *args) {
    Py_buffer x, y;
    if (!PyArg_ParseTuple(args, "y*w*", &x, &y)) return NULL;
    const int64_t outsize = self->output[1] * self->output[2] * self->output[3];
    const int64_t batch = self->input_size ? (int64_t)(x.len / 4) / self->input_size : 0;
    if (x.len % (4 * self->input_size) || y.len != 4 * batch * outsize) {
        PyErr_Format(PyExc_ValueError, "run: %zd input bytes and %zd output bytes do not fit %lld and %lld floats per image",
                     x.len, y.len, (long long)self->input_size, (long long)outsize);
        PyBuffer_Release(&x);
        PyBuffer_Release(&y);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK); /* one run at a time: it owns the buffers */
    for (int64_t b = 0; b < batch; b++) {
        const Input input = {(const float *)x.buf + b * self->input_size, NULL, 0.0f, 1.0f};
        run_one(self, &input, NULL, (float *)y.buf + b * outsize);
    }
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&y);
    Py_RETURN_NONE;
}

static void decode_hwc(const float *buf, int64_t channels, int64_t h, int64_t w, int64_t row, int64_t pix, int sigmoid,
                       double min_peak, double *out);

#define SMOOTH_MAX_TAPS 401 /* sigma up to 100 cells */
#define STR_(x) #x
#define STR(x) STR_(x)

/* A smoothing kernel's byte count: none, or an odd number of floats up to SMOOTH_MAX_TAPS. */
static int taps_fit(Py_ssize_t bytes) {
    const Py_ssize_t n = bytes / 4;
    return bytes % 4 == 0 && (n == 0 || (n % 2 == 1 && n <= SMOOTH_MAX_TAPS));
}

/* How heatmaps are decoded: the activation, the smallest usable peak, and the taps of the Gaussian that
 * smooths the maps first (ntaps 0: none; bitface.data.heatmaps.smooth_maps). */
typedef struct {
    int sigmoid;
    double min_peak;
    const float *taps;
    int64_t ntaps;
} Decoding;

static void smooth_hwc(const float *src, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix, const float *taps,
                       int64_t ntaps, float *tmp, float *dst);
static void raw_peaks_hwc(const float *maps, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix, int sigmoid,
                          double *out);

/* The batch loop of run_crops(_decoded) and run_faces(_decoded): `input` advanced by crop_step bytes
 * and matrix_step doubles per face; each network's maps out as CHW floats, or decoded. */
static void run_batch(Plan *self, Input input, int64_t batch, int64_t crop_step, int64_t matrix_step,
                      const int32_t *mirror, const Decoding *decode, double stride, void *out) {
    const int64_t *o = self->output, channels = o[1];
    const int64_t per_image = decode ? 4 * channels : channels * o[2] * o[3]; /* doubles or floats */
    for (int64_t b = 0; b < batch; b++) {
        if (b && crop_step) input.crop += crop_step;
        if (b && matrix_step) input.matrix += matrix_step;
        if (!decode) {
            run_one(self, &input, mirror, (float *)out + b * per_image);
            continue;
        }
        run_network(self, &input, mirror); /* the maps decoded where the network left them (HWC), or smoothed first */
        double *points = (double *)out + b * per_image;
        const float *maps = (const float *)self->buffers[o[0]] + o[4];
        if (decode->ntaps) {
            float *smoothed = self->smoothed + channels * o[2] * o[3];
            smooth_hwc(maps, channels, o[2], o[3], o[5], o[6], decode->taps, decode->ntaps, self->smoothed, smoothed);
            decode_hwc(smoothed, channels, o[2], o[3], o[3] * channels, channels, decode->sigmoid, decode->min_peak, points);
            raw_peaks_hwc(maps, channels, o[2], o[3], o[5], o[6], decode->sigmoid, points);
        } else
            decode_hwc(maps, channels, o[2], o[3], o[5], o[6], decode->sigmoid, decode->min_peak, points);
        if (!input.gray) continue;
        double m[6]; /* sampled from an image: cells -> crop pixels (OutputSpace "heatmap") -> image pixels */
        crop_to_image(input.matrix, m);
        for (int64_t c = 0; c < channels; c++) {
            const double x = (points[4 * c] + 0.5) * stride - 0.5, y = (points[4 * c + 1] + 0.5) * stride - 0.5;
            points[4 * c] = m[0] * x + m[1] * y + m[2], points[4 * c + 1] = m[3] * x + m[4] * y + m[5];
        }
    }
}

static int64_t output_bytes(Plan *self, const int decode) {
    const int64_t *o = self->output;
    return decode ? 8 * 4 * o[1] : 4 * o[1] * o[2] * o[3];
}

/* Why a test-time flip's channel permutation (int32 per output channel; empty: no flip) does not fit
 * the network, or NULL. */
static const char *mirror_problem(const Plan *self, const Py_buffer *mirror) {
    const int64_t channels = self->output[1];
    if (mirror->len == 0) return NULL;
    if (self->output[2] * self->output[3] == 1) return "mirror needs an output of maps (height x width > 1)";
    if (mirror->len != 4 * channels) return "mirror must hold one int32 per output channel";
    for (Py_ssize_t i = 1; i < self->nstages; i++) /* run_network mirrors the input where it lies */
        if (self->stages[i].out_buf == self->stages[0].out_buf) return "mirror needs a plan that keeps its input";
    for (int64_t c = 0; c < channels; c++)
        if (((const int32_t *)mirror->buf)[c] < 0 || ((const int32_t *)mirror->buf)[c] >= channels)
            return "mirror's entries must be output channels";
    return NULL;
}

/* run_crops and run_crops_decoded: the network on each uint8 crop. */
/* The batch under the plan's lock (one run at a time: it owns the buffers), the GIL released. */
static void run_batch_locked(Plan *self, Input input, int64_t batch, int64_t crop_step, int64_t matrix_step,
                             const Py_buffer *mirror, const Decoding *decoding, double stride, void *out) {
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    run_batch(self, input, batch, crop_step, matrix_step, mirror->len ? mirror->buf : NULL, decoding, stride, out);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
}

/* The buffers a batch call took (a zeroed one, never taken, is skipped by PyBuffer_Release). */
static void release_buffers(Py_buffer *x, Py_buffer *y, Py_buffer *z, Py_buffer *mirror, Py_buffer *taps) {
    PyBuffer_Release(x);
    PyBuffer_Release(y);
    if (z) PyBuffer_Release(z);
    PyBuffer_Release(mirror);
    PyBuffer_Release(taps);
}

static PyObject *crops_batch(Plan *self, PyObject *args, const int decode) {
    Py_buffer x, y, mirror, taps = {0};
    float mean, std;
    Decoding decoding = {0};
    if (decode ? !PyArg_ParseTuple(args, "y*ffpdy*y*w*", &x, &mean, &std, &decoding.sigmoid, &decoding.min_peak, &taps,
                                   &mirror, &y)
               : !PyArg_ParseTuple(args, "y*ffy*w*", &x, &mean, &std, &mirror, &y))
        return NULL;
    decoding.taps = taps.buf, decoding.ntaps = taps.len / 4;
    const int64_t per_image = output_bytes(self, decode);
    const int64_t batch = self->input_size ? (int64_t)x.len / self->input_size : 0;
    const char *why = mirror_problem(self, &mirror), *name = decode ? "run_crops_decoded" : "run_crops";
    if (decode && !taps_fit(taps.len)) why = "taps must be an odd number of float32 values";
    const int misfit =
        x.len % self->input_size || y.len != batch * per_image || self->nstages == 0 || self->stages[0].kind != ST_INPUT;
    if (why || misfit) {
        if (misfit) /* the sizes only where they are the problem */
            PyErr_Format(PyExc_ValueError, "%s: %zd crop bytes and %zd output bytes do not fit %lld and %lld per image",
                         name, x.len, y.len, (long long)self->input_size, (long long)per_image);
        else
            PyErr_Format(PyExc_ValueError, "%s: %s", name, why);
        release_buffers(&x, &y, NULL, &mirror, &taps);
        return NULL;
    }
    const Input input = {NULL, (const uint8_t *)x.buf, mean, std, NULL, 0, 0, NULL};
    run_batch_locked(self, input, batch, self->input_size, 0, &mirror, decode ? &decoding : NULL, 1.0, y.buf);
    release_buffers(&x, &y, NULL, &mirror, &taps);
    Py_RETURN_NONE;
}

/* plan.run_crops(crops, mean, std, mirror, out): crops uint8 (B, H, W[, C]) C-contiguous, normalized in the
 * input stage; the same results as run() on InputSpec.normalize(crops), without the float copy. mirror:
 * empty, or int32 per output channel for a test-time flip (run_network). */
static PyObject *plan_run_crops(Plan *self, PyObject *args) { return crops_batch(self, args, 0); }

/* plan.run_crops_decoded(crops, mean, std, sigmoid, min_peak, taps, mirror, out): run_crops, then decode_heatmaps of
 * its maps (smoothed by taps, float32, unless empty) into out, float64 (B, channels, 4); no CHW copy of
 * the maps, no float output array. */
static PyObject *plan_run_crops_decoded(Plan *self, PyObject *args) { return crops_batch(self, args, 1); }

static int all_finite(const double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* run_faces and run_faces_decoded: the network on crops sampled from one gray image. */
static PyObject *faces_batch(Plan *self, PyObject *args, const int decode) {
    Py_buffer image, matrices, y, mirror, taps = {0};
    Py_ssize_t height, width;
    float mean, std;
    Decoding decoding = {0};
    double stride = 1.0;
    if (decode ? !PyArg_ParseTuple(args, "y*nny*ffpdy*dy*w*", &image, &height, &width, &matrices, &mean, &std,
                                   &decoding.sigmoid, &decoding.min_peak, &taps, &stride, &mirror, &y)
               : !PyArg_ParseTuple(args, "y*nny*ffy*w*", &image, &height, &width, &matrices, &mean, &std, &mirror, &y))
        return NULL;
    decoding.taps = taps.buf, decoding.ntaps = taps.len / 4;
    const int64_t per_image = output_bytes(self, decode), batch = (int64_t)matrices.len / 48;
    const char *why = mirror_problem(self, &mirror);
    if (self->nstages == 0 || self->stages[0].kind != ST_INPUT || self->stages[0].cin != 1)
        why = "the network's input is not one gray channel";
    else if (height < 1 || width < 1 || image.len != (Py_ssize_t)height * width)
        why = "the image bytes are not height x width";
    else if (matrices.len % 48 || y.len != batch * per_image)
        why = "the matrices (6 doubles per face) and the output do not fit";
    else if (!all_finite((const double *)matrices.buf, 6 * batch))
        why = "the matrices must be finite";
    else if (decode && !taps_fit(taps.len))
        why = "taps must be an odd number of float32 values";
    if (why) {
        PyErr_Format(PyExc_ValueError, "%s: %s", decode ? "run_faces_decoded" : "run_faces", why);
        release_buffers(&image, &matrices, &y, &mirror, &taps);
        return NULL;
    }
    const Input input = {NULL, NULL, mean, std, (const uint8_t *)image.buf, height, width, (const double *)matrices.buf};
    run_batch_locked(self, input, batch, 0, 6, &mirror, decode ? &decoding : NULL, stride, y.buf);
    release_buffers(&image, &matrices, &y, &mirror, &taps);
    Py_RETURN_NONE;
}

/* plan.run_faces(image, height, width, matrices, mean, std, mirror, out): image uint8 gray (height, width)
 * C-contiguous; matrices float64 (B, 2, 3), each mapping image pixels to crop pixels; out as run_crops. */
static PyObject *plan_run_faces(Plan *self, PyObject *args) { return faces_batch(self, args, 0); }

/* plan.run_faces_decoded(image, height, width, matrices, mean, std, sigmoid, min_peak, taps, stride, mirror, out): run_faces,
 * then the maps decoded as run_crops_decoded does, and the points mapped to image pixels (a heatmap
 * cell is `stride` crop pixels, centres aligned as OutputSpace "heatmap" aligns them). */
static PyObject *plan_run_faces_decoded(Plan *self, PyObject *args) { return faces_batch(self, args, 1); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* plan.profile(image, repeats) -> [seconds per stage]: the fastest of `repeats` runs of each stage
 * on one image (float32, input_size values). */
static PyObject *plan_profile(Plan *self, PyObject *args) {
    Py_buffer x;
    Py_ssize_t repeats;
    if (!PyArg_ParseTuple(args, "y*n", &x, &repeats)) return NULL;
    if (x.len != 4 * self->input_size || repeats < 1) {
        PyBuffer_Release(&x);
        PyErr_SetString(PyExc_ValueError, "profile: one image and repeats >= 1");
        return NULL;
    }
    double *best = PyMem_Calloc(self->nstages + 1, sizeof(double));
    const Input input = {x.buf, NULL, 0.0f, 1.0f};
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK); /* one run at a time: it owns the buffers */
    for (Py_ssize_t r = 0; r < repeats; r++)
        for (Py_ssize_t i = 0; i < self->nstages; i++) {
            const double t0 = now();
            run_stage(self, i, &input);
            const double t = now() - t0;
            if (r == 0 || t < best[i]) best[i] = t;
        }
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyObject *list = PyList_New(self->nstages);
    for (Py_ssize_t i = 0; i < self->nstages; i++) PyList_SET_ITEM(list, i, PyFloat_FromDouble(best[i]));
    PyMem_Free(best);
    return list;
}

/* plan.buffer(i) -> bytes: a buffer's contents after the last run (for tests of single stages). */
static PyObject *plan_buffer(Plan *self, PyObject *args) {
    Py_ssize_t i, nbytes;
    if (!PyArg_ParseTuple(args, "nn", &i, &nbytes)) return NULL;
    if (i < 0 || i >= self->nbuffers) {
        PyErr_SetString(PyExc_IndexError, "buffer index out of range");
        return NULL;
    }
    return PyBytes_FromStringAndSize(self->buffers[i], nbytes);
}

static PyMethodDef plan_methods[] = {
    {"run", (PyCFunction)plan_run, METH_VARARGS, "run(images, out): the whole network on a batch"},
    {"run_crops", (PyCFunction)plan_run_crops, METH_VARARGS,
     "run_crops(crops, mean, std, mirror, out): the whole network on uint8 crops, normalized natively"},
    {"run_crops_decoded", (PyCFunction)plan_run_crops_decoded, METH_VARARGS,
     "run_crops_decoded(crops, mean, std, sigmoid, min_peak, taps, mirror, out): run_crops, then its heatmaps decoded in place"},
    {"run_faces", (PyCFunction)plan_run_faces, METH_VARARGS,
     "run_faces(image, height, width, matrices, mean, std, mirror, out): the network on crops sampled from a gray image"},
    {"run_faces_decoded", (PyCFunction)plan_run_faces_decoded, METH_VARARGS,
     "run_faces_decoded(image, height, width, matrices, mean, std, sigmoid, min_peak, taps, stride, mirror, out): "
     "run_faces, "
     "then decoded, in image pixels"},
    {"profile", (PyCFunction)plan_profile, METH_VARARGS, "profile(image, repeats) -> seconds per stage"},
    {"buffer", (PyCFunction)plan_buffer, METH_VARARGS, "buffer(index, nbytes) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bitface.runtime._native.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled packed network over preallocated buffers (built by bitface.runtime.plan).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)plan_init,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_methods = plan_methods,
};

/* ------------------------------------------------------------------------------------------- */
/* Module: ISA selection, and a micro-benchmark of the core's binary peak. */

static PyObject *get_isa(PyObject *self, PyObject *unused) { return PyUnicode_FromString(ISA_NAMES[isa_current]); }

static PyObject *available(PyObject *self, PyObject *unused) {
    PyObject *list = PyList_New(0);
    for (int i = 0; i <= isa_best; i++) PyList_Append(list, PyUnicode_FromString(ISA_NAMES[i]));
    return list;
}

static PyObject *set_isa(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    for (int i = 0; i <= isa_best; i++)
        if (!strcmp(name, ISA_NAMES[i])) {
            isa_current = i;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "kernel path %R is not available on this CPU (available: up to %s)", arg,
                 ISA_NAMES[isa_best]);
    return NULL;
}

#if defined(BF_X86)
/* XOR + VPOPCNTQ + ADD into 12 independent accumulators (inputs independent of the sums, so only
 * throughput limits it): the most binary MACs this core can do. */
#define PEAK_CHAINS 12
__attribute__((target(AVX512))) static uint64_t peak_loop(int64_t iterations, uint64_t seed) {
    __m512i acc[PEAK_CHAINS], key[PEAK_CHAINS], v = _mm512_set1_epi64((long long)seed);
    for (int j = 0; j < PEAK_CHAINS; j++) {
        acc[j] = _mm512_setzero_si512();
        key[j] = _mm512_set1_epi64(j * 0x9e3779b97f4a7c15ull);
    }
    for (int64_t i = 0; i < iterations; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(v, key[j])));
        __asm__ volatile("" : "+v"(v));
    }
    uint64_t total = 0, lanes[8];
    for (int j = 0; j < PEAK_CHAINS; j++) {
        _mm512_storeu_si512(lanes, acc[j]);
        for (int l = 0; l < 8; l++) total += lanes[l];
    }
    return total;
}

/* The AVX2 kernel's inner loop at its peak: its ADD_COUNTS_ASM into 8 independent accumulators, each
 * from its own input words (the bytes wrap: only the time counts). */
#define PEAK_CHAINS_AVX2 8
__attribute__((target(AVX2))) static uint64_t peak_loop_avx2(int64_t iterations, uint64_t seed) {
    const __m256i table = nibble_table();
    __m256i acc[PEAK_CHAINS_AVX2];
    const __m256i w_lo = _mm256_set1_epi64x((long long)(seed & LOW_NIBBLES));
    const __m256i w_hi = _mm256_set1_epi64x((long long)((seed >> 4) & LOW_NIBBLES));
    uint64_t words[2 * PEAK_CHAINS_AVX2];
#pragma GCC unroll 8 /* constant indices: the accumulators stay in registers */
    for (int j = 0; j < PEAK_CHAINS_AVX2; j++) {
        acc[j] = _mm256_setzero_si256();
        const uint64_t key = j * 0x9e3779b97f4a7c15ull;
        words[j] = key & LOW_NIBBLES;
        words[PEAK_CHAINS_AVX2 + j] = (key >> 4) & LOW_NIBBLES;
    }
    const uint64_t *ip = words;
    for (int64_t i = 0; i < iterations; i++) {
        __asm__ volatile("" : "+r"(ip)); /* the words are loaded and broadcast every time, as the kernel's */
#pragma GCC unroll 8
        for (int j = 0; j < PEAK_CHAINS_AVX2; j++)
            ADD_COUNTS_ASM("vpbroadcastq", uint64_t, acc[j], ip + j, ip + PEAK_CHAINS_AVX2 + j, w_lo, w_hi, table);
    }
    __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = 0; j < PEAK_CHAINS_AVX2; j++) sum = _mm256_add_epi64(sum, _mm256_sad_epu8(acc[j], _mm256_setzero_si256()));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, sum);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

static volatile uint64_t peak_sink;

/* peak(iterations) -> binary MACs done (time it from Python): the XOR + popcount loop of the kernel
 * path in use (AVX-512 VPOPCNTDQ, or AVX2's nibble table). */
static PyObject *peak(PyObject *self, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
#if defined(BF_X86)
    if (isa_current == ISA_AVX512) {
        Py_BEGIN_ALLOW_THREADS
        peak_sink = peak_loop(n, 0x5555); /* stored, so the loop cannot be optimized away */
        Py_END_ALLOW_THREADS
        return PyLong_FromLongLong(n * PEAK_CHAINS * 512);
    }
    if (isa_current == ISA_AVX2) {
        Py_BEGIN_ALLOW_THREADS
        peak_sink = peak_loop_avx2(n, 0x5555);
        Py_END_ALLOW_THREADS
        return PyLong_FromLongLong(n * PEAK_CHAINS_AVX2 * 256);
    }
#endif
    PyErr_SetString(PyExc_RuntimeError, "the peak micro-benchmark needs AVX-512 VPOPCNTDQ or AVX2");
    return NULL;
}

/* ---- heatmap decoding ----------------------------------------------------------------------------
 * The same decoding as bitface.data.heatmaps.decode_argmax (its numpy twin is the reference the
 * tests compare against): the first argmax of each map, refined along each axis by the vertex of a
 * parabola through the log of the activated peak and its two neighbours (exact for a Gaussian), the
 * offset clipped to half a cell; a map that is not finite everywhere, or whose activated peak is not
 * above min_peak and above its activated minimum, is invalid: centre of the map, confidence 0. The
 * activation (sigmoid of logits, or none) is applied to the few values read, in double precision. */

static inline double activate(double v, int sigmoid) {
    if (!sigmoid) return v;
    double e = exp(-fabs(v)); /* as heatmaps.sigmoid: no overflow, no cancellation for very negative v */
    return v >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

#define PARABOLA_EPS 1e-10

/* lmid: log(max(activate(mid), eps)), shared by both axes */
static double parabola_offset(double lo, double lmid, double hi, int sigmoid) {
    double llo = log(fmax(activate(lo, sigmoid), PARABOLA_EPS)), lhi = log(fmax(activate(hi, sigmoid), PARABOLA_EPS));
    double curvature = llo - 2.0 * lmid + lhi;
    if (!(curvature < 0)) return 0.0;
    double offset = 0.5 * (llo - lhi) / curvature;
    return offset < -0.5 ? -0.5 : offset > 0.5 ? 0.5 : offset;
}

/* The extremes of a map and whether any value is inf or NaN (an exponent of all ones). */
static void map_extremes(const float *map, int64_t n, float *top, float *bottom, int *special) {
    int64_t i = 0;
    float hi = map[0], lo = map[0];
    uint32_t odd = 0;
#if defined(BF_X86)
    /* SSE2 is part of x86-64: four independent vector chains (a single running max is one long
     * dependency chain, several times slower). */
    const __m128i exponent = _mm_set1_epi32(0x7f800000);
    __m128 h[4], l[4];
    __m128i o = _mm_setzero_si128();
    for (int k = 0; k < 4; k++) h[k] = l[k] = _mm_set1_ps(map[0]);
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            __m128 v = _mm_loadu_ps(map + i + 4 * k);
            h[k] = _mm_max_ps(v, h[k]);
            l[k] = _mm_min_ps(v, l[k]);
            __m128i e = _mm_and_si128(_mm_castps_si128(v), exponent);
            o = _mm_or_si128(o, _mm_cmpeq_epi32(e, exponent));
        }
    float lanes_hi[16], lanes_lo[16];
    for (int k = 0; k < 4; k++) _mm_storeu_ps(lanes_hi + 4 * k, h[k]), _mm_storeu_ps(lanes_lo + 4 * k, l[k]);
    for (int k = 0; k < 16; k++) {
        hi = lanes_hi[k] > hi ? lanes_hi[k] : hi;
        lo = lanes_lo[k] < lo ? lanes_lo[k] : lo;
    }
    odd = _mm_movemask_epi8(o) != 0;
#endif
    for (; i < n; i++) {
        float v = map[i];
        uint32_t bits;
        memcpy(&bits, &v, 4);
        odd |= (bits & 0x7f800000u) == 0x7f800000u;
        hi = v > hi ? v : hi;
        lo = v < lo ? v : lo;
    }
    *top = hi, *bottom = lo, *special = odd != 0;
}

#if defined(BF_X86)
/* map_extremes with 16 lanes and four chains, where the CPU has AVX-512. */
__attribute__((target(AVX512))) static void map_extremes_avx512(const float *map, int64_t n, float *top, float *bottom,
                                                                int *special) {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    __m512 h[4], l[4];
    __mmask16 odd = 0;
    for (int k = 0; k < 4; k++) h[k] = l[k] = _mm512_set1_ps(map[0]);
    for (int64_t i = 0; i < n; i += 64)
        for (int k = 0; k < 4; k++) {
            const __mmask16 m = lanes16(n - i - 16 * k > 0 ? n - i - 16 * k : 0);
            const __m512 v = _mm512_mask_loadu_ps(h[0], m, map + i + 16 * k); /* missing lanes: a value seen */
            h[k] = _mm512_max_ps(v, h[k]);
            l[k] = _mm512_min_ps(v, l[k]);
            odd |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), exponent), exponent);
        }
    /* no NaN here when odd is 0, so max/min are order-independent */
    *top = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(h[0], h[1]), _mm512_max_ps(h[2], h[3])));
    *bottom = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(l[0], l[1]), _mm512_min_ps(l[2], l[3])));
    *special = odd != 0;
}

/* The index of the first value equal to top (there is one). */
__attribute__((target(AVX512))) static int64_t first_equal_avx512(const float *map, int64_t n, float top) {
    const __m512 t = _mm512_set1_ps(top);
    for (int64_t i = 0;; i += 16) {
        const __mmask16 hit = _mm512_mask_cmp_ps_mask(lanes16(n - i), _mm512_maskz_loadu_ps(lanes16(n - i), map + i), t,
                                                      _CMP_EQ_OQ);
        if (hit) return i + __builtin_ctz(hit);
    }
}
#endif

/* The decoding of one map from its extremes and first maximum (y, x); at(dy, dx) steps are ystep and xstep
 * floats apart. */
static void decode_peak(const float *best, int64_t y, int64_t x, int64_t h, int64_t w, int64_t ystep, int64_t xstep,
                        float top, float bottom, int special, int sigmoid, double min_peak, double *out) {
    double peak = special ? 0.0 : activate(top, sigmoid);
    if (special || !(peak > min_peak) || !(peak > activate(bottom, sigmoid))) {
        out[0] = (w - 1) / 2.0, out[1] = (h - 1) / 2.0, out[2] = 0.0, out[3] = 0.0;
        return;
    }
    double px = (double)x, py = (double)y;
    const double lmid = log(fmax(peak, PARABOLA_EPS)); /* peak is activate(*best) */
    if (x > 0 && x < w - 1) px += parabola_offset(best[-xstep], lmid, best[xstep], sigmoid);
    if (y > 0 && y < h - 1) py += parabola_offset(best[-ystep], lmid, best[ystep], sigmoid);
    out[0] = px, out[1] = py, out[2] = peak, out[3] = 1.0;
}

static void decode_map(const float *map, int64_t h, int64_t w, int sigmoid, double min_peak, double *out) {
    float top, bottom;
    int special;
    int64_t best = 0; /* the first maximum, as numpy's argmax */
#if defined(BF_X86)
    if (isa_current == ISA_AVX512) {
        map_extremes_avx512(map, h * w, &top, &bottom, &special);
        if (!special) best = first_equal_avx512(map, h * w, top);
        clean_upper(); /* before libm in decode_peak: SSE at full speed */
    } else
#endif
    {
        map_extremes(map, h * w, &top, &bottom, &special);
        if (!special)
            while (map[best] != top) best++;
    }
    decode_peak(map + best, best / w, best % w, h, w, w, 1, top, bottom, special, sigmoid, min_peak, out);
}

#define DECODE_MAX_CHANNELS 1024

#if defined(BF_X86)
/* decode_hwc's two passes with 16 channels per register: per channel, the extremes and whether any value
 * is special; then the pixel index of the first value equal to the top (0 for special channels). */
__attribute__((target(AVX512))) static void hwc_scan_avx512(const float *base, int64_t n, int64_t h, int64_t w,
                                                            int64_t row, int64_t pix, float *top, float *bottom,
                                                            int32_t *special, int32_t *first) {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    for (int64_t c = 0; c < n; c += 16) {
        const __mmask16 m = lanes16(n - c);
        __m512 hi = _mm512_maskz_loadu_ps(m, base + c), lo = hi;
        __mmask16 odd = 0;
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const __m512 v = _mm512_maskz_loadu_ps(m, base + y * row + x * pix + c);
                hi = _mm512_max_ps(v, hi);
                lo = _mm512_min_ps(v, lo);
                odd |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), exponent), exponent);
            }
        _mm512_mask_storeu_ps(top + c, m, hi);
        _mm512_mask_storeu_ps(bottom + c, m, lo);
        _mm512_mask_storeu_epi32(special + c, m, _mm512_maskz_set1_epi32(odd & m, 1));
        /* special channels count as found (at 0); the others wait for their top */
        __mmask16 left = m & ~odd;
        __m512i at = _mm512_maskz_set1_epi32(odd & m, 0);
        at = _mm512_mask_set1_epi32(at, left, -1);
        for (int64_t y = 0; y < h && left; y++)
            for (int64_t x = 0; x < w && left; x++) {
                const __m512 v = _mm512_maskz_loadu_ps(m, base + y * row + x * pix + c);
                const __mmask16 hit = _mm512_mask_cmp_ps_mask(left, v, hi, _CMP_EQ_OQ);
                at = _mm512_mask_set1_epi32(at, hit, (int)(y * w + x));
                left &= ~hit;
            }
        _mm512_mask_storeu_epi32(first + c, m, at);
    }
}
#endif

#if defined(BF_X86)
/* hwc_scan_avx512 with 8 channels per register (the first maxima found through lane masks). */
__attribute__((target(AVX2))) static void hwc_scan_avx2(const float *base, int64_t n, int64_t h, int64_t w, int64_t row,
                                                        int64_t pix, float *top, float *bottom, int32_t *special,
                                                        int32_t *first) {
    const __m256i exponent = _mm256_set1_epi32(0x7f800000);
    for (int64_t c = 0; c < n; c += 8) {
        const int64_t k = n - c < 8 ? n - c : 8;
        const __m256i lanes = lanes8(k);
        const int m = (1 << k) - 1;
        __m256 hi = load8(base + c, k, lanes), lo = hi;
        __m256i odd = _mm256_setzero_si256();
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const __m256 v = load8(base + y * row + x * pix + c, k, lanes);
                hi = _mm256_max_ps(v, hi);
                lo = _mm256_min_ps(v, lo);
                odd = _mm256_or_si256(odd, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exponent), exponent));
            }
        put8(top + c, k, lanes, hi);
        put8(bottom + c, k, lanes, lo);
        const int odd_lanes = _mm256_movemask_ps(_mm256_castsi256_ps(odd)) & m;
        int left = m & ~odd_lanes; /* special channels count as found (at 0); the others wait for their top */
        for (int64_t j = 0; j < k; j++) special[c + j] = odd_lanes >> j & 1, first[c + j] = odd_lanes >> j & 1 ? 0 : -1;
        for (int64_t y = 0; y < h && left; y++)
            for (int64_t x = 0; x < w && left; x++) {
                const __m256 v = load8(base + y * row + x * pix + c, k, lanes);
                for (int hit = _mm256_movemask_ps(_mm256_cmp_ps(v, hi, _CMP_EQ_OQ)) & left; hit; hit &= hit - 1) {
                    const int j = __builtin_ctz((unsigned)hit);
                    first[c + j] = (int32_t)(y * w + x);
                    left &= ~(1 << j);
                }
            }
    }
}
#endif

/* hwc_scan_avx512 in plain C: contiguous channel runs, which the compiler vectorizes. */
static void hwc_scan_portable(const float *base, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix, float *top,
                              float *bottom, int32_t *special, int32_t *first) {
    for (int64_t c = 0; c < n; c++) top[c] = bottom[c] = base[c], special[c] = 0, first[c] = -1;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            const float *v = base + y * row + x * pix;
            for (int64_t c = 0; c < n; c++) {
                uint32_t bits;
                memcpy(&bits, v + c, 4);
                special[c] |= (bits & 0x7f800000u) == 0x7f800000u;
                top[c] = v[c] > top[c] ? v[c] : top[c];
                bottom[c] = v[c] < bottom[c] ? v[c] : bottom[c];
            }
        }
    int64_t left = n; /* channels whose first maximum is still to find */
    for (int64_t c = 0; c < n; c++)
        if (special[c]) first[c] = 0, left--;
    for (int64_t y = 0; y < h && left; y++)
        for (int64_t x = 0; x < w && left; x++) {
            const float *v = base + y * row + x * pix;
            for (int64_t c = 0; c < n; c++)
                if (first[c] < 0 && v[c] == top[c]) first[c] = (int32_t)(y * w + x), left--;
        }
}

/* Gaussian modulation of heatmaps before decoding (DARK, Zhang et al., CVPR 2020), bit for bit as
 * bitface.data.heatmaps.smooth_maps: n channels of HWC maps (row, pix apart) smoothed along x into tmp,
 * then along y into dst (both dense HWC), edges replicated; each output is the sum over the taps in order
 * of tap * value, a multiply then an add in float32 (what numpy's `acc += tap * shifted` computes). */
/* The pixels each tap of output pixel x reads along a row (pass 0), or the rows each tap of output row y
 * reads (pass 1: a row of tmp is w * n values), edges replicated. */
static inline void smooth_sources(const float *in, int pass, int64_t at0, int64_t end, int64_t step, int64_t ntaps,
                                  const float **from) {
    for (int64_t k = 0; k < ntaps; k++) {
        int64_t at = at0 + k - ntaps / 2;
        at = at < 0 ? 0 : at >= end ? end - 1 : at;
        from[k] = in + at * step;
    }
}

/* out[i] = sum over k of taps[k] * from[k][i], i < count (float32, multiply then add, in tap order). */
static inline void smooth_span_portable(const float **from, const float *taps, int64_t ntaps, int64_t count,
                                        float *out) {
    for (int64_t i = 0; i < count; i++) {
        float acc = 0.0f;
        for (int64_t k = 0; k < ntaps; k++) acc = acc + taps[k] * from[k][i];
        out[i] = acc;
    }
}

typedef void (*SmoothSpan)(const float **from, const float *taps, int64_t ntaps, int64_t count, float *out);

/* Both passes with `span`. In dense HWC maps (pix = n) the interior of a row, whose taps need no edge
 * replication, is one span along x too: its tap k reads the row shifted by k pixels. */
static inline __attribute__((always_inline)) void smooth_with(SmoothSpan span, const float *src, int64_t n, int64_t h,
                                                              int64_t w, int64_t row, int64_t pix, const float *taps,
                                                              int64_t ntaps, float *tmp, float *dst) {
    const float *from[SMOOTH_MAX_TAPS];
    const int64_t r = ntaps / 2, interior = pix == n && w > 2 * r ? w - 2 * r : 0;
    for (int64_t y = 0; y < h; y++) /* along x: one pixel's channels at a time, the interior at once */
        for (int64_t x = 0; x < w; x++) {
            if (interior && x == r) {
                for (int64_t k = 0; k < ntaps; k++) from[k] = src + y * row + k * pix;
                span(from, taps, ntaps, interior * n, tmp + (y * w + x) * n);
                x += interior - 1;
                continue;
            }
            smooth_sources(src + y * row, 0, x, w, pix, ntaps, from);
            span(from, taps, ntaps, n, tmp + (y * w + x) * n);
        }
    for (int64_t y = 0; y < h; y++) { /* along y: whole rows */
        smooth_sources(tmp, 1, y, h, w * n, ntaps, from);
        span(from, taps, ntaps, w * n, dst + y * w * n);
    }
}

static void smooth_portable(const float *src, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix,
                            const float *taps, int64_t ntaps, float *tmp, float *dst) {
    smooth_with(smooth_span_portable, src, n, h, w, row, pix, taps, ntaps, tmp, dst);
}

#if defined(BF_X86)
/* smooth_span_portable with 16 values per two registers, their sums kept in registers across the taps. */
__attribute__((target(AVX2))) static inline void smooth_span_avx2(const float **from, const float *taps,
                                                                  int64_t ntaps, int64_t count, float *out) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int64_t k = 0; k < ntaps; k++) {
            const __m256 t = _mm256_broadcast_ss(taps + k);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(t, _mm256_loadu_ps(from[k] + i)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(t, _mm256_loadu_ps(from[k] + i + 8)));
        }
        _mm256_storeu_ps(out + i, a0);
        _mm256_storeu_ps(out + i + 8, a1);
    }
    for (; i < count; i += 8) {
        const int64_t left = count - i;
        const __m256i lanes = lanes8(left);
        __m256 a = _mm256_setzero_ps();
        for (int64_t k = 0; k < ntaps; k++)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_broadcast_ss(taps + k), load8(from[k] + i, left, lanes)));
        put8(out + i, left, lanes, a);
    }
}

__attribute__((target(AVX2))) static void smooth_avx2(const float *src, int64_t n, int64_t h, int64_t w, int64_t row,
                                                      int64_t pix, const float *taps, int64_t ntaps, float *tmp,
                                                      float *dst) {
    smooth_with(smooth_span_avx2, src, n, h, w, row, pix, taps, ntaps, tmp, dst);
}
#endif

static void smooth_hwc(const float *src, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix, const float *taps,
                       int64_t ntaps, float *tmp, float *dst) {
#if defined(BF_X86)
    if (isa_current != ISA_PORTABLE) {
        smooth_avx2(src, n, h, w, row, pix, taps, ntaps, tmp, dst);
        clean_upper();
        return;
    }
#endif
    smooth_portable(src, n, h, w, row, pix, taps, ntaps, tmp, dst);
}

/* After decoding smoothed maps: each usable point's confidence is its raw map's activated peak (the
 * network's own certainty; smoothing lowers peaks), as decode_argmax reports it. HWC maps, n channels. */
static void raw_peaks_hwc(const float *maps, int64_t n, int64_t h, int64_t w, int64_t row, int64_t pix, int sigmoid,
                          double *out) {
    for (int64_t c0 = 0; c0 < n; c0 += DECODE_MAX_CHANNELS) {
        const int64_t m = n - c0 < DECODE_MAX_CHANNELS ? n - c0 : DECODE_MAX_CHANNELS;
        float top[DECODE_MAX_CHANNELS];
        for (int64_t c = 0; c < m; c++) top[c] = maps[c0 + c];
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                const float *v = maps + y * row + x * pix + c0;
                for (int64_t c = 0; c < m; c++) top[c] = v[c] > top[c] ? v[c] : top[c];
            }
        for (int64_t c = 0; c < m; c++)
            if (out[4 * (c0 + c) + 3] > 0) out[4 * (c0 + c) + 2] = activate(top[c], sigmoid);
    }
}

/* decode_map for each channel of HWC maps (pixel (y, x) channel c at y * row + x * pix + c), read in
 * place: one pass over the pixels for every channel's extremes and special values, one for their
 * first maxima, then each channel's peak. */
static void decode_hwc(const float *buf, int64_t channels, int64_t h, int64_t w, int64_t row, int64_t pix, int sigmoid,
                       double min_peak, double *out) {
    float top[DECODE_MAX_CHANNELS], bottom[DECODE_MAX_CHANNELS];
    int32_t special[DECODE_MAX_CHANNELS], first[DECODE_MAX_CHANNELS];
    for (int64_t c0 = 0; c0 < channels; c0 += DECODE_MAX_CHANNELS) {
        const int64_t n = channels - c0 < DECODE_MAX_CHANNELS ? channels - c0 : DECODE_MAX_CHANNELS;
        const float *base = buf + c0;
#if defined(BF_X86)
        if (isa_current == ISA_AVX512) {
            hwc_scan_avx512(base, n, h, w, row, pix, top, bottom, special, first);
            clean_upper(); /* before libm in decode_peak: SSE at full speed */
        } else if (isa_current == ISA_AVX2) {
            hwc_scan_avx2(base, n, h, w, row, pix, top, bottom, special, first);
            clean_upper();
        } else
#endif
            hwc_scan_portable(base, n, h, w, row, pix, top, bottom, special, first);
        for (int64_t c = 0; c < n; c++) {
            const int64_t y = first[c] / w, x = first[c] % w;
            decode_peak(base + y * row + x * pix + c, y, x, h, w, row, pix, top[c], bottom[c], special[c], sigmoid, min_peak,
                        out + 4 * (c0 + c));
        }
    }
}

/* decode_heatmaps(maps, h, w, sigmoid, min_peak, taps, out): maps float32 (count, h, w) contiguous, each
 * smoothed by taps first unless taps is empty; out float64 (count, 4): x, y (cells), confidence, valid (0 or 1). */
static PyObject *decode_heatmaps(PyObject *self, PyObject *args) {
    Py_buffer maps, taps, out;
    long long h, w;
    int sigmoid;
    double min_peak;
    if (!PyArg_ParseTuple(args, "y*LLpdy*w*", &maps, &h, &w, &sigmoid, &min_peak, &taps, &out)) return NULL;
    int64_t count = h > 0 && w > 0 ? (int64_t)(maps.len / 4) / (h * w) : 0;
    const int64_t ntaps = taps.len / 4;
    float *smoothed = NULL;
    const char *why = NULL;
    if (h <= 0 || w <= 0 || maps.len != 4 * count * h * w || out.len != 8 * 4 * count)
        why = "map bytes and output bytes do not fit";
    else if (!taps_fit(taps.len))
        why = "taps must be an odd number (at most " STR(SMOOTH_MAX_TAPS) ") of float32 values";
    else if (ntaps && !(smoothed = malloc(sizeof(float) * 3 * (size_t)(count * h * w))))
        why = "no memory";
    if (why) {
        PyErr_Format(PyExc_ValueError, "decode_heatmaps: %zd map bytes, %zd tap bytes, %zd output bytes, %lld x %lld maps: %s",
                     maps.len, taps.len, out.len, h, w, why);
        PyBuffer_Release(&maps);
        PyBuffer_Release(&taps);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
#if defined(BF_X86)
    if (isa_current != ISA_PORTABLE) clean_upper(); /* whoever ran vector code last: SSE and libm at full speed */
#endif
    if (smoothed) { /* the maps as the channels of one HWC image, smoothed and decoded as a plan's output */
        const int64_t size = count * h * w;
        for (int64_t i = 0; i < count; i++)
            for (int64_t p = 0; p < h * w; p++) smoothed[p * count + i] = ((const float *)maps.buf)[i * h * w + p];
        smooth_hwc(smoothed, count, h, w, w * count, count, taps.buf, ntaps, smoothed + size, smoothed + 2 * size);
        decode_hwc(smoothed + 2 * size, count, h, w, w * count, count, sigmoid, min_peak, out.buf);
        raw_peaks_hwc(smoothed, count, h, w, w * count, count, sigmoid, out.buf);
    } else
        for (int64_t i = 0; i < count; i++)
            decode_map((const float *)maps.buf + i * h * w, h, w, sigmoid, min_peak, (double *)out.buf + 4 * i);
    Py_END_ALLOW_THREADS
    free(smoothed);
    PyBuffer_Release(&maps);
    PyBuffer_Release(&taps);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"isa", get_isa, METH_NOARGS, "the binary kernel path in use: portable, avx2 or avx512"},
    {"available", available, METH_NOARGS, "kernel paths this CPU can run"},
    {"set_isa", set_isa, METH_O, "choose a kernel path (tests and benchmarks)"},
    {"peak", peak, METH_O, "peak(iterations) -> binary MACs of the current kernel path's XOR+popcount peak loop"},
    {"decode_heatmaps", decode_heatmaps, METH_VARARGS, "decode_heatmaps(maps, h, w, sigmoid, min_peak, taps, out)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "bitface native kernels", -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
#if defined(BF_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa_best = ISA_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512vbmi2"))
        isa_best = ISA_AVX512;
#endif
    isa_current = isa_best;
    if (PyType_Ready(&PlanType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&PlanType);
    PyModule_AddObject(m, "Plan", (PyObject *)&PlanType);
    return m;
}
