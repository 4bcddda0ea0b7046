/* osbox._speedups: the stream decoder's fast path in C (see osbox/_decoder.py).
 *
 * output_run(data, pos, sse) cuts a run of compact output frames out of `data`, starting at the
 * line start `pos`. A frame is exactly
 *
 *     [data: ]{"type":"stdout|stderr","text":"TEXT","timestamp":INT}\n   then blank lines
 *
 * where TEXT is every byte up to the next quote that no backslash escapes (a backslash before a
 * newline, or at the end, ends no text) and INT is a JSON integer of at most 18 digits; an SSE
 * frame ("data: ") must be followed by at least one blank line (the one that dispatches it).
 * It returns (end, kinds, texts, stamps, escaped): `end` is where the run stops (== pos when no
 * frame matched), the three lists are parallel, and `escaped` says whether some text held an
 * escape (so may hold a newline). Escapes are resolved as json.loads resolves them, and texts
 * decoded as UTF-8 with surrogatepass, which is what json.loads does with bytes; a text whose
 * escapes are not valid JSON, that does not decode, or that holds a raw control character (JSON
 * forbids them) spoils the run: there is none. No Python-level state, no I/O.
 *
 * The module is optional: without a C compiler osbox uses the pure-Python path, and tests check
 * both against the general decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *STDOUT, *STDERR;

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Write code point `cp` as UTF-8 (surrogates too: 3 bytes, as surrogatepass writes them), at most
 * as many bytes as its `\uXXXX` escape; returns the end. */
static char *
utf8_to(char *o, unsigned int cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}


static const char HEAD[] = "{\"type\":\"std";         /* then "out" or "err" */
static const char TEXT_KEY[] = "\",\"text\":\"";
static const char STAMP_KEY[] = "\",\"timestamp\":";
static const char SSE_PREFIX[] = "data: ";

#define LEN(literal) ((Py_ssize_t)(sizeof(literal) - 1))

static int
hex4(const char *p, unsigned int *out)
{
    unsigned int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned int)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned int)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned int)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The bytes of a JSON string's text that need a look among the 16 at p, one bit each: a quote, a
 * backslash or a control character. */
#if defined(__SSE2__)
static inline unsigned int
text_stops16(const unsigned char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v); /* v <= 0x1F */
    __m128i look = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                control);
    return (unsigned int)_mm_movemask_epi8(look);
}
#endif

/* Scan the text of a JSON string from p to the quote that ends it (one no backslash escapes; a
 * backslash before a newline, or at the end, ends no text: NULL). In the same pass the escapes are
 * resolved into b (from the first one on; b->len is then the resolved length), as json.loads
 * resolves them: a \\uD8xx\\uDCxx pair is one character, a lone surrogate stays one (written as
 * surrogatepass writes it). *escaped says whether there was a backslash, *spoiled whether the
 * text holds a raw control character or an escape JSON refuses (then b is not to be used). */
static const unsigned char *
scan_text(const unsigned char *p, const unsigned char *end, Buf *b, int *escaped, int *spoiled)
{
    const unsigned char *start = p;
    char *o = NULL; /* where resolved bytes go, once there was a backslash */
    int bad = 0;
    while (p < end) {
#if defined(__SSE2__)
        if (end - p >= 16) {
            unsigned int mask = text_stops16(p);
            int k = mask ? __builtin_ctz(mask) : 16;
            if (o != NULL) {
                memcpy(o, p, 16); /* b has room: the rest of the text is at least that long */
                o += k;
            }
            p += k;
            if (k == 16)
                continue;
        }
#endif
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c != '\\') {
            bad |= c < 0x20;
            if (o != NULL)
                *o++ = (char)c;
            p++;
            continue;
        }
        if (p + 1 >= end || p[1] == '\n')
            return NULL; /* what `\\.` in the Python cutter's pattern does not match */
        if (o == NULL) {
            /* The first escape: from here on the text is resolved into b. Resolving never
             * lengthens it, and 16 bytes more allow the copies above. */
            b->len = 0;
            if (buf_reserve(b, (size_t)(end - start) + 16) < 0)
                return NULL;
            memcpy(b->data, start, (size_t)(p - start));
            o = b->data + (p - start);
            *escaped = 1;
        }
        unsigned int cp;
        switch (p[1]) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (end - p >= 6 && hex4((const char *)p + 2, &cp) == 0) {
                p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                    unsigned int low;
                    if (hex4((const char *)p + 2, &low) == 0 && low >= 0xDC00 && low <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        p += 6;
                    }
                }
                o = utf8_to(o, cp);
                continue;
            }
            bad = 1; /* not four hex digits: the scan goes on after `\u`, as the pattern's */
            break;
        default:
            bad = 1;
        }
        p += 2;
    }
    if (p >= end)
        return NULL;
    if (o != NULL)
        b->len = (size_t)(o - b->data);
    *spoiled = bad;
    return p;
}

/* Parse one frame at p (< end). On success store its parts and return the position after its
 * blank lines; return NULL when the bytes there are not such a frame. An escaped text is resolved
 * into `scratch` (see scan_text). */
static const char *
parse_frame(const char *p, const char *end, int sse, PyObject **kind, const char **text,
            Py_ssize_t *text_len, int *escaped, int *spoiled, long long *stamp, Buf *scratch)
{
    if (sse) {
        if (end - p < LEN(SSE_PREFIX) || memcmp(p, SSE_PREFIX, LEN(SSE_PREFIX)) != 0)
            return NULL;
        p += LEN(SSE_PREFIX);
    }
    if (end - p < LEN(HEAD) + 3 + LEN(TEXT_KEY) || memcmp(p, HEAD, LEN(HEAD)) != 0)
        return NULL;
    p += LEN(HEAD);
    if (memcmp(p, "out", 3) == 0)
        *kind = STDOUT;
    else if (memcmp(p, "err", 3) == 0)
        *kind = STDERR;
    else
        return NULL;
    p += 3;
    if (memcmp(p, TEXT_KEY, LEN(TEXT_KEY)) != 0)
        return NULL;
    p += LEN(TEXT_KEY);

    const char *start = p;
    const char *quote = (const char *)scan_text((const unsigned char *)p, (const unsigned char *)end,
                                                scratch, escaped, spoiled);
    if (quote == NULL)
        return NULL;
    p = quote;
    *text = start;
    *text_len = p - start;

    if (end - p < LEN(STAMP_KEY) || memcmp(p, STAMP_KEY, LEN(STAMP_KEY)) != 0)
        return NULL;
    p += LEN(STAMP_KEY);
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    const char *digits = p;
    long long value = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - digits < 18)
            value = value * 10 + (*p - '0'); /* no more: 19 digits may overflow (refused below) */
        p++;
    }
    Py_ssize_t n_digits = p - digits;
    if (n_digits == 0 || n_digits > 18 || (digits[0] == '0' && n_digits > 1))
        return NULL; /* no number, one that may not fit, or a leading zero JSON refuses */
    *stamp = negative ? -value : value;

    if (end - p < 2 || p[0] != '}' || p[1] != '\n')
        return NULL;
    p += 2;
    if (sse) {
        if (p >= end || *p != '\n')
            return NULL; /* not dispatched yet */
    }
    while (p < end && *p == '\n')
        p++;
    return p;
}


/* The scratch buffer is kept from one call to the next: a frame of a megabyte needs one of that
 * size, and a fresh one each time was mapped, faulted in page by page and unmapped again. */
#define KEPT_SCRATCH_MAX ((size_t)2 << 20)
static Buf kept_scratch = {NULL, 0, 0};

static PyObject *
output_run(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    int sse;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "output_run(data, pos, sse) takes 3 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    pos = PyLong_AsSsize_t(args[1]);
    sse = PyObject_IsTrue(args[2]);
    PyObject *kinds = NULL, *texts = NULL, *stamps = NULL, *result = NULL;
    Buf scratch = kept_scratch; /* where escaped texts are resolved (taken: a nested call gets none) */
    kept_scratch = (Buf){NULL, 0, 0};
    if ((pos == -1 && PyErr_Occurred()) || sse < 0)
        goto done;
    if (pos < 0 || pos > view.len) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        goto done;
    }
    kinds = PyList_New(0);
    texts = PyList_New(0);
    stamps = PyList_New(0);
    if (!kinds || !texts || !stamps)
        goto done;

    const char *base = view.buf, *p = base + pos, *end = base + view.len;
    int escaped = 0;
    while (p < end) {
        PyObject *kind;
        const char *text;
        Py_ssize_t text_len;
        long long stamp;
        int frame_escaped = 0, spoiled = 0;
        const char *next =
            parse_frame(p, end, sse, &kind, &text, &text_len, &frame_escaped, &spoiled, &stamp, &scratch);
        if (next == NULL) {
            if (PyErr_Occurred())
                goto done; /* out of memory */
            break;
        }
        PyObject *text_obj = NULL;
        if (!spoiled)
            text_obj = frame_escaped
                           ? PyUnicode_DecodeUTF8(scratch.data, (Py_ssize_t)scratch.len, "surrogatepass")
                           : PyUnicode_DecodeUTF8(text, text_len, "surrogatepass");
        if (text_obj == NULL) {
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                goto done;
            /* A control character or bytes that are not UTF-8 spoil the whole run (the Python
             * cutter does the same): the general path reports them. */
            PyErr_Clear();
            result = Py_BuildValue("n[][][]O", pos, Py_False);
            goto done;
        }
        PyObject *stamp_obj = PyLong_FromLongLong(stamp);
        int failed = stamp_obj == NULL || PyList_Append(texts, text_obj) < 0 ||
                     PyList_Append(stamps, stamp_obj) < 0 || PyList_Append(kinds, kind) < 0;
        Py_DECREF(text_obj);
        Py_XDECREF(stamp_obj);
        if (failed)
            goto done;
        escaped |= frame_escaped;
        p = next;
    }
    result = Py_BuildValue("nOOOO", (Py_ssize_t)(p - base), kinds, texts, stamps,
                           escaped ? Py_True : Py_False);
done:
    if (scratch.cap <= KEPT_SCRATCH_MAX && kept_scratch.data == NULL)
        kept_scratch = scratch; /* for the next call */
    else
        PyMem_Free(scratch.data);
    Py_XDECREF(kinds);
    Py_XDECREF(texts);
    Py_XDECREF(stamps);
    PyBuffer_Release(&view);
    return result;
}

/* ---- The server's side: command output → frames (see osbox/server/execd/output.py) ----
 *
 * exact_frame(prefix, data, suffix, final) -> (frame, consumed)
 *     One frame: prefix + the JSON string body of `data` + suffix. Valid UTF-8 is copied as it is,
 *     `"`, `\` and control characters are escaped as json.dumps escapes them, and every byte that
 *     is not part of valid UTF-8 becomes `\udcXX` (Python's surrogateescape), so the client gets
 *     back exactly the bytes written. Unless `final`, an incomplete UTF-8 sequence at the end is
 *     left out (`consumed` < len(data)) for the next call, so no character is split in two.
 *
 * line_frames(prefix, data, start, suffix, max_line) -> (frames, end, count)
 *     One frame per whole line from `start`: a line ends at CR, LF or CRLF and goes without its
 *     ending; an empty line is the text "\n". Stops at the end of the last whole line, or before
 *     a line that is not valid UTF-8 or longer than `max_line` (the caller frames that one).
 */

/* 0: copied as it is; 1: escaped (quote, backslash, control); 2: the start of a non-ASCII byte. */
static unsigned char CLASS[256];

static void
init_class(void)
{
    for (int c = 0; c < 256; c++)
        CLASS[c] = c < 0x20 || c == '"' || c == '\\' ? 1 : c >= 0x80 ? 2 : 0;
}

/* The length of the valid UTF-8 sequence at p (*p >= 0x80), 0 when it is not one, -1 when `end`
 * cuts off what could still become one. Surrogates, overlong forms and > U+10FFFF are invalid, as
 * for Python's strict decoder. */
static int
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    int n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c == 0xE0)
        n = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        n = 3;
    else if (c == 0xED)
        n = 3, hi = 0x9F;
    else if (c == 0xF0)
        n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        n = 4;
    else if (c == 0xF4)
        n = 4, hi = 0x8F;
    else
        return 0;
    for (int i = 1; i < n; i++) {
        if (p + i >= end)
            return -1;
        if (p[i] < lo || p[i] > hi)
            return 0;
        lo = 0x80, hi = 0xBF;
    }
    return n;
}

static const char HEX[] = "0123456789abcdef";

/* How many of the 16 bytes at p need no escaping before the first that does (16: none does). A
 * byte needs a look when it is a quote, a backslash, a control character or not ASCII. */
static inline int
plain_prefix16(const unsigned char *p)
{
#if defined(__SSE2__)
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    /* The signed compare below 0x20 takes the control characters and the bytes >= 0x80 at once. */
    __m128i look = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
    unsigned int mask = (unsigned int)_mm_movemask_epi8(look);
    return mask ? __builtin_ctz(mask) : 16;
#else
    int k = 0;
    while (k < 16 && CLASS[p[k]] == 0)
        k++;
    return k;
#endif
}

/* Escape the bytes [p, end) to o as the inside of a JSON string: `"`, `\` and control characters
 * as json.dumps escapes them, valid UTF-8 as it is, and each byte that is not part of valid UTF-8
 * as `\udcXX` when `surrogates` (otherwise the first one stops it and sets *invalid). Returns the
 * length written; o needs room for 6 bytes (`\u00XX`) per input byte. Where 16 bytes are left, 16
 * are copied at once and those past the first that needs escaping are overwritten after it. */
static size_t
escape_text(char *o, const unsigned char *p, const unsigned char *end, int surrogates, int *invalid)
{
    size_t n = 0;
    while (p < end) {
        if (end - p >= 16) {
            int k = plain_prefix16(p);
            memcpy(o + n, p, 16);
            n += (size_t)k;
            p += k;
            if (k == 16)
                continue;
        }
        unsigned char c = *p;
        if (CLASS[c] == 0) {
            o[n] = (char)c;
            n++;
            p++;
            continue;
        }
        if (CLASS[c] == 2) {
            int len = utf8_sequence(p, end);
            if (len > 0) {
                memcpy(o + n, p, (size_t)len);
                n += (size_t)len;
                p += len;
                continue;
            }
            if (!surrogates) {
                *invalid = 1;
                return n;
            }
            memcpy(o + n, "\\udc", 4);
            o[n + 4] = HEX[c >> 4], o[n + 5] = HEX[c & 15];
            n += 6;
            p++;
            continue;
        }
        char short_form = 0;
        switch (c) {
        case '"': short_form = '"'; break;
        case '\\': short_form = '\\'; break;
        case '\n': short_form = 'n'; break;
        case '\r': short_form = 'r'; break;
        case '\t': short_form = 't'; break;
        case '\b': short_form = 'b'; break;
        case '\f': short_form = 'f'; break;
        }
        if (short_form) {
            o[n] = '\\', o[n + 1] = short_form;
            n += 2;
        } else {
            memcpy(o + n, "\\u00", 4);
            o[n + 4] = HEX[c >> 4], o[n + 5] = HEX[c & 15];
            n += 6;
        }
        p++;
    }
    return n;
}

static PyObject *
exact_frame(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer prefix, data, suffix;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "exact_frame(prefix, data, suffix, final) takes 4 arguments");
        return NULL;
    }
    int final = PyObject_IsTrue(args[3]);
    if (final < 0 || PyObject_GetBuffer(args[0], &prefix, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &suffix, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&prefix);
        PyBuffer_Release(&data);
        return NULL;
    }
    const unsigned char *start = data.buf, *end = start + data.len, *stop = end;
    if (!final) {
        /* Hold back a sequence the next read may complete: a lead byte among the last three
         * whose sequence `end` cuts off. */
        for (const unsigned char *q = end - 1; q >= start && q >= end - 3; q--) {
            if (*q < 0x80)
                break;
            if (*q >= 0xC0) {
                if (utf8_sequence(q, end) == -1)
                    stop = q;
                break;
            }
        }
    }
    PyObject *frame;
    if (stop > start) {
        /* Room for the longest the frame can be, cut to size after one pass: the allocator hands
         * the tail back (and the same block out again for the next read), so the room costs no
         * copy nor any page that is not written. */
        frame = PyBytes_FromStringAndSize(NULL, prefix.len + (stop - start) * 6 + suffix.len);
        if (frame != NULL) {
            char *o = PyBytes_AS_STRING(frame);
            memcpy(o, prefix.buf, (size_t)prefix.len);
            int invalid = 0;
            o += prefix.len;
            o += escape_text(o, start, stop, 1, &invalid);
            memcpy(o, suffix.buf, (size_t)suffix.len);
            if (_PyBytes_Resize(&frame, o + suffix.len - PyBytes_AS_STRING(frame)) < 0)
                frame = NULL;
        }
    } else {
        frame = PyBytes_FromStringAndSize("", 0);
    }
    PyObject *result = frame == NULL ? NULL : Py_BuildValue("Nn", frame, (Py_ssize_t)(stop - start));
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&data);
    PyBuffer_Release(&suffix);
    return result;
}

/* The end of the line that starts at p (its CR or LF), or `end` when none ends it. */
static inline const unsigned char *
line_end(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        unsigned int mask = (unsigned int)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
        if (mask)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (p < end && *p != '\n' && *p != '\r')
        p++;
    return p;
}

/* How many line ends (CR or LF) [p, end) holds. */
static Py_ssize_t
line_ends(const unsigned char *p, const unsigned char *end)
{
    Py_ssize_t count = 0;
#if defined(__SSE2__)
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        count += __builtin_popcount((unsigned int)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\r')))));
    }
#endif
    for (; p < end; p++)
        count += *p == '\n' || *p == '\r';
    return count;
}

static PyObject *
line_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer prefix, data, suffix;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "line_frames(prefix, data, start, suffix, max_line) takes 5 arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]), max_line = PyLong_AsSsize_t(args[4]);
    if ((start == -1 || max_line == -1) && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &prefix, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&prefix);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &suffix, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&prefix);
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    if (start < 0 || start > data.len) {
        PyErr_SetString(PyExc_ValueError, "start out of range");
        goto done;
    }
    const unsigned char *base = data.buf, *end = base + data.len, *p = base + start;
    /* Sized for lines that need no escaping (one frame per line end), grown if some do, and cut
     * to size at the end. */
    size_t affixes = (size_t)(prefix.len + suffix.len) + 2, n = 0;
    size_t cap = (size_t)(end - p) + (size_t)line_ends(p, end) * affixes + 64;
    PyObject *frames = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    Py_ssize_t count = 0;
    if (frames == NULL)
        goto done;
    while (p < end) {
        const unsigned char *eol = line_end(p, end);
        if (eol == end || eol - p > max_line)
            break; /* not a whole line, or one for the caller */
        size_t most = affixes + (size_t)(eol - p) * 6 + 16; /* 6: `\u00XX`, the longest escape */
        if (n + most > cap) {
            cap = cap * 2 > n + most ? cap * 2 : n + most;
            if (_PyBytes_Resize(&frames, (Py_ssize_t)cap) < 0)
                goto done;
        }
        char *o = PyBytes_AS_STRING(frames) + n, *text = o + prefix.len;
        if (eol == p) {
            memcpy(text, "\\n", 2); /* an empty line is "\n" */
            text += 2;
        } else {
            int invalid = 0;
            text += escape_text(text, p, eol, 0, &invalid);
            if (invalid)
                break; /* not UTF-8: for the caller */
        }
        memcpy(o, prefix.buf, (size_t)prefix.len);
        memcpy(text, suffix.buf, (size_t)suffix.len);
        n = (size_t)(text + suffix.len - PyBytes_AS_STRING(frames));
        p = eol + ((*eol == '\r' && eol + 1 < end && eol[1] == '\n') ? 2 : 1);
        count++;
    }
    if (_PyBytes_Resize(&frames, (Py_ssize_t)n) == 0)
        result = Py_BuildValue("Nnn", frames, (Py_ssize_t)(p - base), count);
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&data);
    PyBuffer_Release(&suffix);
    return result;
}

static PyMethodDef methods[] = {
    {"output_run", (PyCFunction)(void (*)(void))output_run, METH_FASTCALL,
     "output_run(data, pos, sse) -> (end, kinds, texts, stamps, escaped)"},
    {"exact_frame", (PyCFunction)(void (*)(void))exact_frame, METH_FASTCALL,
     "exact_frame(prefix, data, suffix, final) -> (frame, consumed)"},
    {"line_frames", (PyCFunction)(void (*)(void))line_frames, METH_FASTCALL,
     "line_frames(prefix, data, start, suffix, max_line) -> (frames, end, count)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "osbox._speedups",
    .m_doc = "The stream decoder's fast path, and the server's output framing, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    STDOUT = PyUnicode_InternFromString("stdout");
    STDERR = PyUnicode_InternFromString("stderr");
    if (STDOUT == NULL || STDERR == NULL)
        return NULL;
    init_class();
    return PyModule_Create(&module_def);
}
