/* osbox._speedups: the stream decoder's fast path in C (see osbox/_decoder.py).
 *
 * output_run(data, pos, sse) cuts a run of compact output frames out of `data`, starting at the
 * line start `pos`. A frame is exactly
 *
 *     [data: ]{"type":"stdout|stderr","text":"TEXT","timestamp":INT}\n   then blank lines
 *
 * where TEXT is every byte up to the next quote and INT is a JSON integer of at most 18 digits; an
 * SSE frame ("data: ") must be followed by at least one blank line (the one that dispatches it).
 * It returns (end, kinds, texts, stamps, escaped): `end` is where the run stops (== pos when no
 * frame matched), the three lists are parallel, and `escaped` says whether some text holds a
 * backslash, which the caller resolves (or refuses) with the json module, so escapes decode exactly
 * as json.loads decodes them. Texts are decoded as UTF-8 with surrogatepass, which is what
 * json.loads does with bytes; a text that does not decode or holds a raw control character (JSON
 * forbids them) spoils the run: there is none. No Python-level state, no I/O.
 *
 * The module is optional: without a C compiler osbox uses the pure-Python path, and tests check
 * both against the general decoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *STDOUT, *STDERR;

static const char HEAD[] = "{\"type\":\"std";         /* then "out" or "err" */
static const char TEXT_KEY[] = "\",\"text\":\"";
static const char STAMP_KEY[] = "\",\"timestamp\":";
static const char SSE_PREFIX[] = "data: ";

#define LEN(literal) ((Py_ssize_t)(sizeof(literal) - 1))

/* Parse one frame at p (< end). On success store its parts and return the position after its
 * blank lines; return NULL when the bytes there are not such a frame. */
static const char *
parse_frame(const char *p, const char *end, int sse, PyObject **kind, const char **text,
            Py_ssize_t *text_len, int *escaped, int *spoiled, long long *stamp)
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
    const char *quote = memchr(p, '"', (size_t)(end - p));
    if (quote == NULL)
        return NULL;
    /* The text ends at the first quote, escaped or not: an escaped one leaves a text that ends in a
     * backslash, which the caller's json check refuses. One branch-free pass (vectorised by the
     * compiler) looks for backslashes and control characters. */
    unsigned char control = 0, backslash = 0;
    for (const unsigned char *c = (const unsigned char *)p; c < (const unsigned char *)quote; c++) {
        control |= *c < 0x20;
        backslash |= *c == '\\';
    }
    *escaped = backslash;
    *spoiled = control;
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
            parse_frame(p, end, sse, &kind, &text, &text_len, &frame_escaped, &spoiled, &stamp);
        if (next == NULL)
            break;
        PyObject *text_obj = spoiled ? NULL : PyUnicode_DecodeUTF8(text, text_len, "surrogatepass");
        if (text_obj == NULL) {
            if (!spoiled && !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
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
    Py_XDECREF(kinds);
    Py_XDECREF(texts);
    Py_XDECREF(stamps);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"output_run", (PyCFunction)(void (*)(void))output_run, METH_FASTCALL,
     "output_run(data, pos, sse) -> (end, kinds, texts, stamps, escaped)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "osbox._speedups",
    .m_doc = "The stream decoder's fast path in C.",
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
    return PyModule_Create(&module_def);
}
