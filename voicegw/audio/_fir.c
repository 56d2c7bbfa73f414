/* The factor-3 polyphase FIR of voicegw.audio.resample, in C: one call per 20 ms frame.
 *
 * Integer arithmetic, the numpy path's own, so the output is bit-identical: int16 samples times
 * int16 coefficients (the low-pass scaled by 2**14 for upsampling's phases and by 2**15 for
 * downsampling, set once from Python), summed in int32, then (sum + half) >> shift (rounding
 * half up) and clipped to int16. No sum can overflow: set_coefficients refuses a phase whose
 * coefficient magnitudes, times 32768, reach 2**31.
 *
 * Two adjacent samples times two adjacent taps, summed, is one 32-bit lane of x86's pmaddwd: the
 * AVX2 kernel does 16 products per instruction, where double-precision FMA did 4. Each phase's
 * samples are packed as overlapping pairs (x[j], x[j + 1]) and its taps as pairs (c[2t],
 * c[2t + 1]), so lane m of tap pair t reads pair m + 2t. The portable kernel computes the same
 * sums one output at a time (the tests hold the two to each other and to numpy). Upsampling's
 * phase 0 is a plain delay (the low-pass is a third-band filter), so it is copied, not filtered.
 * A Stream (below) keeps one direction's state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AVX2_KERNEL 1
#endif

#define FACTOR 3
#define DOWN_TAPS 97  /* the low-pass (voicegw.audio.resample._TAPS) */
#define UP_TAPS ((DOWN_TAPS + FACTOR - 1) / FACTOR)  /* per phase: 33 */
#define UP_HIST (UP_TAPS - 1)
#define PAIRS ((UP_TAPS + 1) / 2)  /* tap pairs per phase: 33 taps (32 in two of downsampling's phases), then zeros */
#define UP_SHIFT 14
#define DOWN_SHIFT 15
#define LANES 8      /* outputs per vector */
_Static_assert(PAIRS % 2 == 1, "the AVX2 kernel takes tap pairs two at a time, then the last one");

/* the loops around the kernel (packing pairs, rounding, interleaving) are compiled for x86-64-v3
 * (AVX2) too, chosen when the module loads by what the CPU has, so that they are vectorised */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

static int32_t up_pair[FACTOR][PAIRS];    /* phase r's window taps 2t, 2t + 1 (row i = window position i) */
static int32_t down_pair[FACTOR][PAIRS];  /* phase p's taps h[3i + p] for i = 2t, 2t + 1 */
static int up_delay = -1;  /* the window position upsampling's phase 0 copies, or -1: it is filtered */
static int ready = 0;
static int avx2 = 0;       /* the AVX2 kernel runs (the CPU has it and use_kernel did not say otherwise) */

static inline int32_t pack(int16_t lo, int16_t hi) {
    return (int32_t)((uint32_t)(uint16_t)lo | (uint32_t)(uint16_t)hi << 16);
}

static inline int16_t rounded(int32_t sum, int shift) {
    int32_t y = (sum + (1 << (shift - 1))) >> shift;  /* arithmetic shift: floor */
    return (int16_t)(y > 32767 ? 32767 : y < -32768 ? -32768 : y);
}

/* the sum of |c[i * stride]| for i < n */
static long long magnitudes(const int16_t *c, int n, int stride) {
    long long sum = 0;
    for (int i = 0; i < n; i++) sum += c[i * stride] < 0 ? -c[i * stride] : c[i * stride];
    return sum;
}

/* set_coefficients(up: int16[33][3], down: int16[97]): row i of up = window position i */
static PyObject *set_coefficients(PyObject *self, PyObject *args) {
    Py_buffer up, down;
    if (!PyArg_ParseTuple(args, "y*y*", &up, &down)) return NULL;
    PyObject *result = NULL;
    if (up.len != (Py_ssize_t)(UP_TAPS * FACTOR * 2) || down.len != (Py_ssize_t)(DOWN_TAPS * 2)) {
        PyErr_SetString(PyExc_ValueError, "coefficients of the wrong size");
        goto done;
    }
    int16_t u[UP_TAPS][FACTOR], h[DOWN_TAPS + 2 * FACTOR * PAIRS] = {0};
    memcpy(u, up.buf, sizeof(u));
    memcpy(h, down.buf, DOWN_TAPS * 2);
    /* the bound of every sum: coefficient magnitudes times full scale, plus the rounding's half */
    int over = magnitudes(h, DOWN_TAPS, 1) * 32768 + (1 << (DOWN_SHIFT - 1)) >= (1LL << 31);
    for (int r = 0; r < FACTOR; r++)
        over |= magnitudes(&u[0][r], UP_TAPS, FACTOR) * 32768 + (1 << (UP_SHIFT - 1)) >= (1LL << 31);
    if (over) {
        PyErr_SetString(PyExc_ValueError, "coefficients whose sums could overflow 32 bits");
        goto done;
    }
    for (int r = 0; r < FACTOR; r++)
        for (int t = 0; t < PAIRS; t++) {
            up_pair[r][t] = pack(u[2 * t][r], 2 * t + 1 < UP_TAPS ? u[2 * t + 1][r] : 0);
            down_pair[r][t] = pack(h[FACTOR * 2 * t + r], h[FACTOR * (2 * t + 1) + r]);
        }
    /* phase 0 is a plain delay when its only nonzero tap is 1.0 */
    int nonzero = 0, at = -1;
    for (int i = 0; i < UP_TAPS; i++)
        if (u[i][0] != 0) {
            nonzero++;
            at = i;
        }
    up_delay = nonzero == 1 && u[at][0] == (1 << UP_SHIFT) ? at : -1;
    ready = 1;
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&up);
    PyBuffer_Release(&down);
    return result;
}

/* a[m] += sum over t < PAIRS of the pmaddwd of p[m + 2t] and c[t], for m < k8 (a multiple of LANES) */
static void madd_portable(const int32_t *p, Py_ssize_t k8, const int32_t *c, int32_t *a) {
    for (Py_ssize_t m = 0; m < k8; m++) {
        int32_t s = 0;
        for (int t = 0; t < PAIRS; t++) {
            int32_t v = p[m + 2 * t];
            s += (int32_t)(int16_t)(v & 0xffff) * (int16_t)(c[t] & 0xffff)
                 + (int32_t)(int16_t)(v >> 16) * (int16_t)(c[t] >> 16);
        }
        a[m] += s;
    }
}

#ifdef AVX2_KERNEL
__attribute__((target("avx2"))) static void madd_avx2(const int32_t *p, Py_ssize_t k8, const int32_t *c, int32_t *a) {
    for (Py_ssize_t m = 0; m < k8; m += LANES) {
        __m256i s0 = _mm256_loadu_si256((const __m256i *)(a + m)), s1 = _mm256_setzero_si256();
        const int32_t *q = p + m;
        for (int t = 0; t + 1 < PAIRS; t += 2) {  /* two chains of adds */
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(q + 2 * t)),
                                                         _mm256_set1_epi32(c[t])));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(q + 2 * t + 2)),
                                                         _mm256_set1_epi32(c[t + 1])));
        }
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(q + 2 * (PAIRS - 1))),
                                                     _mm256_set1_epi32(c[PAIRS - 1])));
        _mm256_storeu_si256((__m256i *)(a + m), _mm256_add_epi32(s0, s1));
    }
}
#endif

static void madd(const int32_t *p, Py_ssize_t k8, const int32_t *c, int32_t *a) {
#ifdef AVX2_KERNEL
    if (avx2) {
        madd_avx2(p, k8, c, a);
        return;
    }
#endif
    madd_portable(p, k8, c, a);
}

/* ------------------------------------------------------------------------------------------
 * Stream: one direction of one call's resampler, its state kept here (what StreamResampler keeps
 * in Python on the numpy path): the history, the pre-ringing still to drop, the samples taken and
 * given, and the odd byte a model delta may end with. Besides the resampler's own methods it has
 * the two conversions the call makes per message, each one C call from the Python that asks for
 * it (base64 by pybase64's functions, set once with the mu-law tables):
 *   caller_b64(ulaw_b64) -> pcm16 24 kHz base64     (8 kHz -> 24 kHz streams)
 *   model_b64(b64, raw=None) -> ulaw 8 kHz base64   (24 kHz -> 8 kHz streams)
 * with the same results as voicegw.audio.transcode's Python references of them.
 */

#define HIST_MAX DOWN_TAPS  /* down keeps 94-96 samples once it has output, 48 before; up 32 */
#define DELAY ((DOWN_TAPS - 1) / 2)

typedef struct {
    PyObject_HEAD
    int up;
    int carry;  /* a model delta's trailing odd byte, or -1 */
    Py_ssize_t nhist;
    long long skip, n_in, n_out;
    int16_t hist[HIST_MAX];
} Stream;

static int16_t ulaw_lin[256];           /* audioop.ulaw2lin of each byte */
static uint8_t lin_ulaw[65536 >> 2];    /* audioop.lin2ulaw of (sample >> 2), offset by 8192 */
static PyObject *b64decode = NULL, *b64encode = NULL;

static void stream_reset(Stream *s) {
    s->nhist = s->up ? UP_HIST : DELAY;  /* down: the window of output 0 starts at x[-DELAY] */
    memset(s->hist, 0, sizeof(s->hist));
    s->skip = s->up ? DELAY : 0;  /* raw outputs before time 0: the filter's pre-ringing */
    s->n_in = s->n_out = 0;
    s->carry = -1;
}

/* One piece of a stream: `buf` holds the history, then the `nx` new samples the caller writes at
 * `x`, then zeros to `nbuf`; `k` outputs (before the pre-ringing is dropped), `k8` outputs per
 * phase rounded up to whole vectors; `pairs` (per phase when downsampling, `stride` apart) and
 * `acc` are the kernel's; `out` gets the outputs as int16. One allocation holds them all. */
typedef struct {
    void *mem;
    int16_t *buf, *x, *out;
    int32_t *pairs, *acc;
    Py_ssize_t nx, n, nbuf, k, k8, stride;
} Work;

static int work_open(Stream *s, Py_ssize_t nx, Work *w) {
    Py_ssize_t n = s->nhist + nx, npairs, nacc;
    if (s->up) {
        w->k = FACTOR * nx;
        w->k8 = (nx + LANES - 1) / LANES * LANES;
        w->stride = w->k8 + 2 * PAIRS;
        w->nbuf = w->stride + 1;  /* pair j reads x[j + 1] */
        npairs = w->stride;
        nacc = FACTOR * w->k8;
    } else {
        w->k = n >= DOWN_TAPS ? (n - DOWN_TAPS) / FACTOR + 1 : 0;
        w->k8 = (w->k + LANES - 1) / LANES * LANES;
        w->stride = w->k8 + 2 * PAIRS;
        w->nbuf = FACTOR * w->stride + FACTOR;  /* phase p's pair j reads x[3j + p] and x[3j + 3 + p] */
        if (w->nbuf < n) w->nbuf = n;
        npairs = FACTOR * w->stride;
        nacc = w->k8;
    }
    w->mem = PyMem_Malloc((size_t)(npairs + nacc) * sizeof(int32_t) + (size_t)(w->nbuf + w->k) * sizeof(int16_t));
    if (w->mem == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->pairs = (int32_t *)w->mem;
    w->acc = w->pairs + npairs;
    w->buf = (int16_t *)(w->acc + nacc);
    w->out = w->buf + w->nbuf;
    memcpy(w->buf, s->hist, (size_t)s->nhist * sizeof(int16_t));
    memset(w->buf + n, 0, (size_t)(w->nbuf - n) * sizeof(int16_t));
    w->x = w->buf + s->nhist;
    w->nx = nx;
    w->n = n;
    return 0;
}

/* upsampling: the outputs interleaved (z[3q], z[3q + 1], z[3q + 2]) */
CLONES static void up_run(Work *w) {
    const int16_t *b = w->buf;
    Py_ssize_t k8 = w->k8, nx = w->nx;
    for (Py_ssize_t j = 0; j < w->stride; j++) w->pairs[j] = pack(b[j], b[j + 1]);
    memset(w->acc, 0, (size_t)(FACTOR * k8) * sizeof(int32_t));
    for (int r = up_delay >= 0; r < FACTOR; r++) madd(w->pairs, k8, up_pair[r], w->acc + r * k8);
    for (Py_ssize_t q = 0; q < nx; q++)
        for (int r = 0; r < FACTOR; r++) w->out[FACTOR * q + r] = rounded(w->acc[r * k8 + q], UP_SHIFT);
    if (up_delay >= 0)  /* phase 0 copied */
        for (Py_ssize_t q = 0; q < nx; q++) w->out[FACTOR * q] = b[q + up_delay];
}

/* downsampling: output m is the window x[3m .. 3m + DOWN_TAPS - 1], as three polyphase FIRs over the
 * de-interleaved input: y[m] = sum over p and i of h[3i + p] * x[3(m + i) + p] */
CLONES static void down_run(Work *w) {
    const int16_t *b = w->buf;
    Py_ssize_t k8 = w->k8;
    memset(w->acc, 0, (size_t)k8 * sizeof(int32_t));
    for (int p = 0; p < FACTOR; p++) {
        int32_t *pp = w->pairs + p * w->stride;
        for (Py_ssize_t j = 0; j < w->stride; j++) pp[j] = pack(b[FACTOR * j + p], b[FACTOR * j + FACTOR + p]);
        madd(pp, k8, down_pair[p], w->acc);
    }
    for (Py_ssize_t m = 0; m < w->k; m++) w->out[m] = rounded(w->acc[m], DOWN_SHIFT);
}

/* Filter the piece; keep the new history; `out` and `k`: the outputs past the pre-ringing. */
static void work_run(Stream *s, Work *w) {
    Py_ssize_t n = w->n, k = w->k, keep;
    if (s->up) {
        up_run(w);
        keep = UP_HIST;
    } else {
        down_run(w);
        keep = n - FACTOR * k;
    }
    memmove(s->hist, w->buf + n - keep, (size_t)keep * sizeof(int16_t));
    s->nhist = keep;
    Py_ssize_t drop = s->skip < k ? (Py_ssize_t)s->skip : k;
    s->skip -= drop;
    s->n_in += w->nx;
    s->n_out += k - drop;
    w->out += drop;
    w->k = k - drop;
}

static inline uint8_t ulaw_of(int16_t v) { return lin_ulaw[(v >> 2) + 8192]; }

/* the piece's outputs as int16 bytes */
static PyObject *work_pcm16(Stream *s, Work *w) {
    work_run(s, w);
    PyObject *out = PyBytes_FromStringAndSize((const char *)w->out, w->k * 2);
    PyMem_Free(w->mem);
    return out;
}

static int check_ready(void) {
    if (!ready) PyErr_SetString(PyExc_RuntimeError, "set_coefficients first");
    return ready;
}

static int check_codec(Stream *s, int up) {
    if (b64decode == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_codec first");
        return 0;
    }
    if (s->up != up) {
        PyErr_SetString(PyExc_TypeError, up ? "caller_b64 needs an 8 kHz -> 24 kHz stream"
                                            : "model_b64 needs a 24 kHz -> 8 kHz stream");
        return 0;
    }
    return 1;
}

static PyObject *empty_str(void) { return PyUnicode_New(0, 0); }

static PyObject *Stream_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    int up;
    static char *names[] = {"up", NULL};
    if (!check_ready() || !PyArg_ParseTupleAndKeywords(args, kw, "p", names, &up)) return NULL;
    Stream *s = (Stream *)type->tp_alloc(type, 0);
    if (s != NULL) {
        s->up = up;
        stream_reset(s);
    }
    return (PyObject *)s;
}

/* process(pcm16) -> pcm16: the next piece of the stream, whole int16 samples */
static PyObject *Stream_process(Stream *s, PyObject *arg) {
    Py_buffer x;
    if (PyObject_GetBuffer(arg, &x, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    Work w;
    if (x.len & 1)
        PyErr_Format(PyExc_ValueError, "PCM16 input must hold whole samples, got %zd bytes", x.len);
    else if (x.len == 0)
        out = PyBytes_FromStringAndSize(NULL, 0);
    else if (work_open(s, x.len / 2, &w) == 0) {
        memcpy(w.x, x.buf, (size_t)w.nx * 2);  /* int16 samples, any alignment */
        out = work_pcm16(s, &w);
    }
    PyBuffer_Release(&x);
    return out;
}

/* flush() -> pcm16: what the filter holds, then a fresh stream (and no carried byte) */
static PyObject *Stream_flush(Stream *s, PyObject *unused) {
    long long target = s->up ? s->n_in * FACTOR : (s->n_in + FACTOR - 1) / FACTOR, done = s->n_out;
    PyObject *out;
    Work w;
    if (s->n_in == 0) {
        out = PyBytes_FromStringAndSize(NULL, 0);
    } else if (work_open(s, s->up ? (DELAY + FACTOR - 1) / FACTOR : DELAY + FACTOR - 1, &w) < 0) {
        return NULL;
    } else {
        memset(w.x, 0, (size_t)w.nx * sizeof(int16_t));
        out = work_pcm16(s, &w);
        if (out != NULL && PyBytes_GET_SIZE(out) > 2 * (target - done))
            _PyBytes_Resize(&out, 2 * (target - done));
    }
    stream_reset(s);
    return out;
}

static PyObject *Stream_reset(Stream *s, PyObject *unused) {
    stream_reset(s);
    Py_RETURN_NONE;
}

/* caller_b64(ulaw_b64) -> str: a caller frame (8 kHz mu-law, base64) as 24 kHz PCM16 base64, ""
 * while the filter's look-ahead holds it all */
static PyObject *Stream_caller_b64(Stream *s, PyObject *text) {
    if (!check_codec(s, 1)) return NULL;
    PyObject *raw = PyObject_CallOneArg(b64decode, text);
    if (raw == NULL) return NULL;
    if (!PyBytes_Check(raw)) {
        Py_DECREF(raw);
        PyErr_SetString(PyExc_TypeError, "b64decode must return bytes");
        return NULL;
    }
    Py_ssize_t nx = PyBytes_GET_SIZE(raw);
    PyObject *pcm = NULL, *out = NULL;
    Work w;
    if (nx == 0) {
        Py_DECREF(raw);
        return empty_str();
    }
    if (work_open(s, nx, &w) == 0) {
        const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(raw);
        for (Py_ssize_t i = 0; i < nx; i++) w.x[i] = ulaw_lin[b[i]];
        pcm = work_pcm16(s, &w);
    }
    Py_DECREF(raw);
    if (pcm == NULL) return NULL;
    out = PyBytes_GET_SIZE(pcm) ? PyObject_CallOneArg(b64encode, pcm) : empty_str();
    Py_DECREF(pcm);
    return out;
}

/* model_b64(b64, raw=None) -> str: a model audio delta (24 kHz PCM16, base64; `raw`: its bytes
 * when already decoded) as 8 kHz mu-law base64, "" when nothing is due; an odd last byte is kept
 * for the next delta */
static PyObject *Stream_model_b64(Stream *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *b64 = nargs > 0 ? args[0] : NULL, *given = nargs > 1 ? args[1] : Py_None;
    int bad = nargs > 2;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw && !bad; i++) {  /* as the Python reference's signature */
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "raw") == 0 && nargs < 2)
            given = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(name, "model_b64") == 0 && nargs < 1)
            b64 = args[nargs + i];
        else
            bad = 1;
    }
    if (bad || b64 == NULL) {
        PyErr_SetString(PyExc_TypeError, "model_b64(model_b64, raw=None)");
        return NULL;
    }
    if (!check_codec(s, 0)) return NULL;
    PyObject *raw = given != Py_None ? Py_NewRef(given) : PyObject_CallOneArg(b64decode, b64);
    if (raw == NULL) return NULL;
    Py_buffer x;
    if (PyObject_GetBuffer(raw, &x, PyBUF_SIMPLE) < 0) {
        Py_DECREF(raw);
        return NULL;
    }
    const uint8_t *b = x.buf;
    Py_ssize_t len = x.len, total = len + (s->carry >= 0), nx = total / 2;
    PyObject *out = NULL;
    Work w;
    if (nx == 0) {  /* nothing, or the one byte of half a sample */
        if (len) s->carry = b[0];
        out = empty_str();
    } else if (work_open(s, nx, &w) == 0) {
        Py_ssize_t i = 0;
        if (s->carry >= 0) {  /* little-endian: the carried byte is the low one */
            w.x[i++] = (int16_t)(uint16_t)(s->carry | b[0] << 8);
            b++;
        }
        memcpy(w.x + i, b, (size_t)(nx - i) * 2);
        b += 2 * (nx - i);
        s->carry = total & 1 ? *b : -1;
        work_run(s, &w);
        PyObject *ulaw = PyBytes_FromStringAndSize(NULL, w.k);
        if (ulaw != NULL) {
            uint8_t *o = (uint8_t *)PyBytes_AS_STRING(ulaw);
            for (Py_ssize_t m = 0; m < w.k; m++) o[m] = ulaw_of(w.out[m]);
            out = w.k ? PyObject_CallOneArg(b64encode, ulaw) : empty_str();
            Py_DECREF(ulaw);
        }
        PyMem_Free(w.mem);
    }
    PyBuffer_Release(&x);
    Py_DECREF(raw);
    return out;
}

static PyObject *Stream_latency_ms(Stream *s, void *unused) {
    long long in_rate = s->up ? 8000 : 24000, out_rate = s->up ? 24000 : 8000;
    return PyFloat_FromDouble((double)(s->n_in * out_rate - s->n_out * in_rate) * 1000.0 / (double)(in_rate * out_rate));
}

static PyMethodDef Stream_methods[] = {
    {"process", (PyCFunction)Stream_process, METH_O, "process(pcm16) -> pcm16"},
    {"flush", (PyCFunction)Stream_flush, METH_NOARGS, "flush() -> pcm16: the held audio; a fresh stream"},
    {"reset", (PyCFunction)Stream_reset, METH_NOARGS, "reset(): drop the held audio"},
    {"caller_b64", (PyCFunction)Stream_caller_b64, METH_O, "caller_b64(ulaw_b64) -> pcm16 base64 (up)"},
    {"model_b64", (PyCFunction)(void (*)(void))Stream_model_b64, METH_FASTCALL | METH_KEYWORDS, "model_b64(b64, raw=None) -> ulaw base64 (down)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Stream_getset[] = {
    {"latency_ms", (getter)Stream_latency_ms, NULL, "audio taken but not yet given, ms of input (exact)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "voicegw.audio._fir.Stream",
    .tp_basicsize = sizeof(Stream),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Stream(up): one direction of one call's resampler (8 kHz <-> 24 kHz PCM16)",
    .tp_new = Stream_new,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset,
};

/* set_codec(ulaw2lin: 256 int16, lin2ulaw: 16384 uint8 by sample >> 2, b64decode, b64encode) */
static PyObject *set_codec(PyObject *self, PyObject *args) {
    Py_buffer dec, enc;
    PyObject *d, *e;
    if (!PyArg_ParseTuple(args, "y*y*OO", &dec, &enc, &d, &e)) return NULL;
    PyObject *result = NULL;
    if (dec.len != (Py_ssize_t)sizeof(ulaw_lin) || enc.len != (Py_ssize_t)sizeof(lin_ulaw))
        PyErr_SetString(PyExc_ValueError, "mu-law tables of the wrong size");
    else if (!PyCallable_Check(d) || !PyCallable_Check(e))
        PyErr_SetString(PyExc_TypeError, "b64decode and b64encode must be callable");
    else {
        memcpy(ulaw_lin, dec.buf, sizeof(ulaw_lin));
        memcpy(lin_ulaw, enc.buf, sizeof(lin_ulaw));
        Py_XSETREF(b64decode, Py_NewRef(d));
        Py_XSETREF(b64encode, Py_NewRef(e));
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&dec);
    PyBuffer_Release(&enc);
    return result;
}

/* lin2ulaw(pcm16) -> mu-law by the table (the table's own check against audioop) */
static PyObject *lin2ulaw(PyObject *self, PyObject *arg) {
    Py_buffer x;
    if (PyObject_GetBuffer(arg, &x, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (x.len & 1)
        PyErr_SetString(PyExc_ValueError, "whole int16 samples");
    else if ((out = PyBytes_FromStringAndSize(NULL, x.len / 2)) != NULL) {
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
        const uint8_t *b = x.buf;
        for (Py_ssize_t i = 0; i < x.len / 2; i++) {
            int16_t v;
            memcpy(&v, b + 2 * i, 2);
            o[i] = ulaw_of(v);
        }
    }
    PyBuffer_Release(&x);
    return out;
}

/* use_kernel("avx2" | "portable") -> the kernel that ran until now (the tests run both) */
static PyObject *use_kernel(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "use_kernel(name: str)");
        return NULL;
    }
    PyObject *before = PyUnicode_FromString(avx2 ? "avx2" : "portable");
    if (strcmp(name, "portable") == 0) {
        avx2 = 0;
#ifdef AVX2_KERNEL
    } else if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2")) {
        avx2 = 1;
#endif
    } else {
        PyErr_Format(PyExc_ValueError, "no kernel %R on this machine", arg);
        Py_CLEAR(before);
    }
    return before;
}

static PyMethodDef methods[] = {
    {"set_coefficients", set_coefficients, METH_VARARGS, "set_coefficients(up: int16[33][3], down: int16[97])"},
    {"use_kernel", use_kernel, METH_O, "use_kernel(name) -> the previous: 'avx2' (where the CPU has it) or 'portable'"},
    {"set_codec", set_codec, METH_VARARGS, "set_codec(ulaw2lin: int16[256], lin2ulaw: uint8[16384], b64decode, b64encode)"},
    {"lin2ulaw", lin2ulaw, METH_O, "lin2ulaw(pcm16) -> mu-law, by the table set_codec was given"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fir", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fir(void) {
#ifdef AVX2_KERNEL
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2");
#endif
    if (PyType_Ready(&StreamType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Stream", (PyObject *)&StreamType) < 0) Py_CLEAR(m);
    return m;
}
