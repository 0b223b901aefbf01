/* architect_cleanup._fsops: one directory's system calls in one call, without the GIL.
 *
 * The file walk (architect_cleanup/fs.py) lists a directory, lstat()s the names a rule
 * matched and unlinks the judged ones, each re-checked right before its own unlink. Done one
 * system call at a time from Python, every call releases and takes back the GIL: with the
 * pool's threads (safety.workers) that is a futex hand-over per file, and the interpreter's
 * time per name is most of what a run costs beyond the kernel's. These functions do one
 * directory's calls in a loop with the GIL released and return what os.listdir, os.lstat
 * and fs.unlink_all would have found. The decisions (rules, last-moment reasons, counts)
 * stay in Python; fs.py falls back to its own loops when this module is not built.
 *
 * Prefetch is the dry run's: a thread of this module's own lists leaf directories and
 * lstat()s their names ahead of the run's thread, never touching a Python object (so never
 * taking the GIL), and sorts each name by the group of patterns that takes it where plain
 * texts decide (fs.group_classes); the run's thread takes the results in order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* os.stat_result, whose instances lstat_many() returns */
static PyTypeObject *stat_result_type;

/* ---- listdir_filter ------------------------------------------------------------------- */

typedef struct {
    char *buf;      /* the kept names, each NUL-terminated */
    size_t len, cap;
    size_t *offs;   /* where each kept name starts in buf */
    unsigned char *codes;  /* the class of each (see classify) */
    size_t n, ncap;
} names_t;

static int
names_add(names_t *nm, const char *s, size_t l, unsigned char code)
{
    if (nm->len + l + 1 > nm->cap) {
        size_t cap = nm->cap ? nm->cap : 16384;
        while (cap < nm->len + l + 1)
            cap *= 2;
        char *b = realloc(nm->buf, cap);
        if (b == NULL)
            return -1;
        nm->buf = b;
        nm->cap = cap;
    }
    if (nm->n == nm->ncap) {
        size_t c = nm->ncap ? nm->ncap * 2 : 256;
        size_t *o = realloc(nm->offs, c * sizeof *o);
        if (o == NULL)
            return -1;
        nm->offs = o;
        unsigned char *k = realloc(nm->codes, c);
        if (k == NULL)
            return -1;
        nm->codes = k;
        nm->ncap = c;
    }
    memcpy(nm->buf + nm->len, s, l + 1);
    nm->codes[nm->n] = code;
    nm->offs[nm->n++] = nm->len;
    nm->len += l + 1;
    return 0;
}

typedef struct {
    const char *s;
    size_t l;
} text_t;

/* The texts of a tuple of bytes (borrowed: the tuple outlives their use). */
static int
texts_of(PyObject *tuple, text_t **out, Py_ssize_t *n)
{
    if (!PyTuple_Check(tuple)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of bytes");
        return -1;
    }
    *n = PyTuple_GET_SIZE(tuple);
    *out = PyMem_Calloc(*n ? (size_t)*n : 1, sizeof **out);
    if (*out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        char *p;
        Py_ssize_t l;
        if (PyBytes_AsStringAndSize(PyTuple_GET_ITEM(tuple, i), &p, &l) < 0)
            return -1;
        (*out)[i].s = p;
        (*out)[i].l = (size_t)l;
    }
    return 0;
}

static int
ends_with_one(const char *s, size_t l, const text_t *tails, Py_ssize_t nt)
{
    for (Py_ssize_t i = 0; i < nt; i++)
        if (tails[i].l <= l && memcmp(s + l - tails[i].l, tails[i].s, tails[i].l) == 0)
            return 1;
    return 0;
}

static int
holds_one(const char *s, size_t l, const text_t *needles, Py_ssize_t nn)
{
    for (Py_ssize_t i = 0; i < nn; i++)
        if (memmem(s, l, needles[i].s, needles[i].l) != NULL)
            return 1;
    return 0;
}

/* One group of patterns as fs.group_classes gives it. */
typedef struct {
    text_t *suf, *inf, *oth;
    Py_ssize_t ns, ni, no;
    int ask;                  /* its other patterns must be asked of every name */
} class_t;

/* What a listing keeps: every name, the names ending with a tail or holding a needle
   (listdir_filter), or the names some class may take (Prefetch). */
typedef struct {
    int every;
    const text_t *tails, *needles;
    Py_ssize_t nt, nn;
    const class_t *classes;   /* NULL: tails and needles */
    Py_ssize_t ncls;
} filter_t;

#define DROP (-1)
#define UNDECIDED 255

/* The class of a name: the index of the group that takes it (fs.group_matcher's order: a
   group's suffixes and infixes decide, its other patterns need Python's matcher), UNDECIDED
   when the matcher must decide, DROP when no group can take it. */
static int
classify(const char *s, size_t l, const filter_t *f)
{
    if (f->every)
        return UNDECIDED;
    if (f->classes == NULL)
        return ends_with_one(s, l, f->tails, f->nt) || holds_one(s, l, f->needles, f->nn)
            ? 0 : DROP;
    for (Py_ssize_t g = 0; g < f->ncls; g++) {
        const class_t *c = &f->classes[g];
        if (ends_with_one(s, l, c->suf, c->ns) || holds_one(s, l, c->inf, c->ni))
            return g < UNDECIDED ? (int)g : UNDECIDED;
        if (c->ask || holds_one(s, l, c->oth, c->no))
            return UNDECIDED;
    }
    return DROP;
}

/* Raise the error *err* (an errno; 0: none), as os functions raise it; -1 when raised. */
static int
set_error(int err)
{
    if (err == 0)
        return 0;
    if (err == ENOMEM)
        PyErr_NoMemory();
    else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return -1;
}

/* The names of the directory *fd* that *f* keeps, with their class, in listing order, into
   *nm*, and how many it held into *total*; 0 or an errno. Needs no GIL. The descriptor's
   position is left at the start. */
static int
list_names(int fd, const filter_t *f, names_t *nm, long long *total)
{
    int err = 0;
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *dir = dfd < 0 ? NULL : fdopendir(dfd);
    if (dir == NULL) {
        err = errno;
        if (dfd >= 0)
            close(dfd);
        return err;
    }
    rewinddir(dir);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dir);
        if (e == NULL) {
            err = errno;
            break;
        }
        const char *s = e->d_name;
        if (s[0] == '.' && (s[1] == '\0' || (s[1] == '.' && s[2] == '\0')))
            continue;
        (*total)++;
        size_t l = strlen(s);
        int code = classify(s, l, f);
        if (code != DROP && names_add(nm, s, l, (unsigned char)code) < 0) {
            err = ENOMEM;
            break;
        }
    }
    rewinddir(dir);
    closedir(dir);
    return err;
}

/* The names of *nm* as a list of str, decoded as os.listdir decodes them. */
static PyObject *
names_list(const names_t *nm)
{
    PyObject *list = PyList_New((Py_ssize_t)nm->n);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < nm->n; i++) {
        const char *s = nm->buf + nm->offs[i];
        PyObject *u = PyUnicode_DecodeFSDefaultAndSize(s, (Py_ssize_t)strlen(s));
        if (u == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, u);
    }
    return list;
}

PyDoc_STRVAR(listdir_filter_doc,
"listdir_filter(fd, tails, needles) -> (names, total)\n\n"
"os.listdir(fd), keeping only the names that end with one of *tails* or hold one of\n"
"*needles* (tuples of bytes, compared with the name's bytes); *tails* None keeps every\n"
"name. *total* is how many names the directory held. Names are decoded as os.listdir\n"
"decodes them (the file system encoding, surrogateescape). The descriptor's position is\n"
"left at the start, as os.listdir leaves it.");

static PyObject *
listdir_filter(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *tails_obj, *needles_obj;
    if (!PyArg_ParseTuple(args, "iOO:listdir_filter", &fd, &tails_obj, &needles_obj))
        return NULL;
    int every = tails_obj == Py_None;
    text_t *tails = NULL, *needles = NULL;
    Py_ssize_t nt = 0, nn = 0;
    PyObject *list = NULL, *result = NULL;
    names_t nm = {0};
    long long total = 0;
    int err;

    if (!every && (texts_of(tails_obj, &tails, &nt) < 0
                   || texts_of(needles_obj, &needles, &nn) < 0))
        goto done;

    filter_t f = {.every = every, .tails = tails, .needles = needles, .nt = nt, .nn = nn};
    Py_BEGIN_ALLOW_THREADS
    err = list_names(fd, &f, &nm, &total);
    Py_END_ALLOW_THREADS

    if (set_error(err) < 0)
        goto done;
    list = names_list(&nm);
    if (list == NULL)
        goto done;
    result = Py_BuildValue("(OL)", list, total);
done:
    Py_XDECREF(list);
    PyMem_Free(tails);
    PyMem_Free(needles);
    free(nm.buf);
    free(nm.offs);
    free(nm.codes);
    return result;
}

/* ---- lstat_many ----------------------------------------------------------------------- */

/* sec * 10**9 + nsec as an int, as posixmodule.c's fill_time computes it; straight from C
   while it fits in 64 bits (until the year 2255), sparing four temporary objects. */
static PyObject *
ns_total(time_t sec, long nsec)
{
    if (sec > -9000000000LL && sec < 9000000000LL)
        return PyLong_FromLongLong((long long)sec * 1000000000LL + nsec);
    PyObject *s = PyLong_FromLongLong((long long)sec);
    PyObject *billion = PyLong_FromLong(1000000000L);
    PyObject *frac = PyLong_FromLong(nsec);
    PyObject *s_ns = (s && billion) ? PyNumber_Multiply(s, billion) : NULL;
    PyObject *total = (s_ns && frac) ? PyNumber_Add(s_ns, frac) : NULL;
    Py_XDECREF(s);
    Py_XDECREF(billion);
    Py_XDECREF(frac);
    Py_XDECREF(s_ns);
    return total;
}

/* As posixmodule.c's fill_time: whole seconds at index, float seconds at index+3,
   nanoseconds at index+6. */
static int
fill_time(PyObject *v, int index, time_t sec, long nsec)
{
    PyObject *s = PyLong_FromLongLong((long long)sec);
    PyObject *total = ns_total(sec, nsec);
    PyObject *f = PyFloat_FromDouble((double)sec + (double)nsec * 1e-9);
    if (s == NULL || total == NULL || f == NULL) {
        Py_XDECREF(s);
        Py_XDECREF(total);
        Py_XDECREF(f);
        return -1;
    }
    PyStructSequence_SET_ITEM(v, index, s);
    PyStructSequence_SET_ITEM(v, index + 3, f);
    PyStructSequence_SET_ITEM(v, index + 6, total);
    return 0;
}

static PyObject *
id_long(unsigned long id)
{
    /* posixmodule.c's _PyLong_FromUid/_PyLong_FromGid: (uid_t)-1 is -1 */
    return id == (unsigned long)(uid_t)-1 ? PyLong_FromLong(-1) : PyLong_FromUnsignedLong(id);
}

/* An os.stat_result equal to what os.lstat() returns for *st*. */
static PyObject *
stat_result(const struct stat *st)
{
    PyObject *v = PyStructSequence_New(stat_result_type);
    if (v == NULL)
        return NULL;
    PyStructSequence_SET_ITEM(v, 0, PyLong_FromLong((long)st->st_mode));
    PyStructSequence_SET_ITEM(v, 1, PyLong_FromUnsignedLongLong((unsigned long long)st->st_ino));
    PyStructSequence_SET_ITEM(v, 2, PyLong_FromUnsignedLongLong((unsigned long long)st->st_dev));
    PyStructSequence_SET_ITEM(v, 3, PyLong_FromLong((long)st->st_nlink));
    PyStructSequence_SET_ITEM(v, 4, id_long((unsigned long)st->st_uid));
    PyStructSequence_SET_ITEM(v, 5, id_long((unsigned long)st->st_gid));
    PyStructSequence_SET_ITEM(v, 6, PyLong_FromLongLong((long long)st->st_size));
    PyStructSequence_SET_ITEM(v, 16, PyLong_FromLong((long)st->st_blksize));
    PyStructSequence_SET_ITEM(v, 17, PyLong_FromLong((long)st->st_blocks));
    PyStructSequence_SET_ITEM(v, 18, PyLong_FromLong((long)st->st_rdev));
    if (fill_time(v, 7, st->st_atim.tv_sec, st->st_atim.tv_nsec) < 0
            || fill_time(v, 8, st->st_mtim.tv_sec, st->st_mtim.tv_nsec) < 0
            || fill_time(v, 9, st->st_ctim.tv_sec, st->st_ctim.tv_nsec) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(v); i++) {
        if (PyStructSequence_GET_ITEM(v, i) == NULL) {  /* a PyLong_From* failed */
            Py_DECREF(v);
            return NULL;
        }
    }
    return v;
}

/* ---- Stat ------------------------------------------------------------------------------ */

/* A dry run's lstat of a name listed ahead (Prefetch): the struct itself, each attribute of
   os.stat_result made when it is read. A million names cost one small object each instead
   of an os.stat_result and its 19 values, most never read; that was a sixth of a dry run's
   time on the run's thread (`make bench`). */
typedef struct {
    PyObject_HEAD
    struct stat st;
} StatObject;

static PyTypeObject StatType;

static PyObject *
light_stat(const struct stat *st)
{
    StatObject *v = PyObject_New(StatObject, &StatType);
    if (v != NULL)
        v->st = *st;
    return (PyObject *)v;
}

static PyObject *
float_time(time_t sec, long nsec)
{
    return PyFloat_FromDouble((double)sec + (double)nsec * 1e-9);  /* as fill_time */
}

#define STAT_OF(o) (&((StatObject *)(o))->st)

static PyObject *St_mode(PyObject *o, void *Py_UNUSED(c)) { return PyLong_FromLong((long)STAT_OF(o)->st_mode); }
static PyObject *St_ino(PyObject *o, void *Py_UNUSED(c))
{ return PyLong_FromUnsignedLongLong((unsigned long long)STAT_OF(o)->st_ino); }
static PyObject *St_dev(PyObject *o, void *Py_UNUSED(c))
{ return PyLong_FromUnsignedLongLong((unsigned long long)STAT_OF(o)->st_dev); }
static PyObject *St_nlink(PyObject *o, void *Py_UNUSED(c)) { return PyLong_FromLong((long)STAT_OF(o)->st_nlink); }
static PyObject *St_uid(PyObject *o, void *Py_UNUSED(c)) { return id_long((unsigned long)STAT_OF(o)->st_uid); }
static PyObject *St_gid(PyObject *o, void *Py_UNUSED(c)) { return id_long((unsigned long)STAT_OF(o)->st_gid); }
static PyObject *St_size(PyObject *o, void *Py_UNUSED(c))
{ return PyLong_FromLongLong((long long)STAT_OF(o)->st_size); }
static PyObject *St_blksize(PyObject *o, void *Py_UNUSED(c))
{ return PyLong_FromLong((long)STAT_OF(o)->st_blksize); }
static PyObject *St_blocks(PyObject *o, void *Py_UNUSED(c))
{ return PyLong_FromLong((long)STAT_OF(o)->st_blocks); }
static PyObject *St_rdev(PyObject *o, void *Py_UNUSED(c)) { return PyLong_FromLong((long)STAT_OF(o)->st_rdev); }
static PyObject *St_atime(PyObject *o, void *Py_UNUSED(c))
{ return float_time(STAT_OF(o)->st_atim.tv_sec, STAT_OF(o)->st_atim.tv_nsec); }
static PyObject *St_mtime(PyObject *o, void *Py_UNUSED(c))
{ return float_time(STAT_OF(o)->st_mtim.tv_sec, STAT_OF(o)->st_mtim.tv_nsec); }
static PyObject *St_ctime(PyObject *o, void *Py_UNUSED(c))
{ return float_time(STAT_OF(o)->st_ctim.tv_sec, STAT_OF(o)->st_ctim.tv_nsec); }
static PyObject *St_atime_ns(PyObject *o, void *Py_UNUSED(c))
{ return ns_total(STAT_OF(o)->st_atim.tv_sec, STAT_OF(o)->st_atim.tv_nsec); }
static PyObject *St_mtime_ns(PyObject *o, void *Py_UNUSED(c))
{ return ns_total(STAT_OF(o)->st_mtim.tv_sec, STAT_OF(o)->st_mtim.tv_nsec); }
static PyObject *St_ctime_ns(PyObject *o, void *Py_UNUSED(c))
{ return ns_total(STAT_OF(o)->st_ctim.tv_sec, STAT_OF(o)->st_ctim.tv_nsec); }

static PyGetSetDef Stat_getset[] = {
    {"st_mode", St_mode, NULL, NULL, NULL},
    {"st_ino", St_ino, NULL, NULL, NULL},
    {"st_dev", St_dev, NULL, NULL, NULL},
    {"st_nlink", St_nlink, NULL, NULL, NULL},
    {"st_uid", St_uid, NULL, NULL, NULL},
    {"st_gid", St_gid, NULL, NULL, NULL},
    {"st_size", St_size, NULL, NULL, NULL},
    {"st_atime", St_atime, NULL, NULL, NULL},
    {"st_mtime", St_mtime, NULL, NULL, NULL},
    {"st_ctime", St_ctime, NULL, NULL, NULL},
    {"st_atime_ns", St_atime_ns, NULL, NULL, NULL},
    {"st_mtime_ns", St_mtime_ns, NULL, NULL, NULL},
    {"st_ctime_ns", St_ctime_ns, NULL, NULL, NULL},
    {"st_blksize", St_blksize, NULL, NULL, NULL},
    {"st_blocks", St_blocks, NULL, NULL, NULL},
    {"st_rdev", St_rdev, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The os.stat_result of the same struct (what os.lstat returns). */
static PyObject *
Stat_full(PyObject *o, PyObject *Py_UNUSED(ignored))
{
    return stat_result(STAT_OF(o));
}

static PyObject *
Stat_repr(PyObject *o)
{
    const struct stat *st = STAT_OF(o);
    return PyUnicode_FromFormat("Stat(st_mode=%ld, st_ino=%llu, st_size=%lld, st_mtime_ns=%lld)",
                                (long)st->st_mode, (unsigned long long)st->st_ino,
                                (long long)st->st_size,
                                (long long)st->st_mtim.tv_sec * 1000000000LL
                                    + st->st_mtim.tv_nsec);
}

static PyMethodDef Stat_methods[] = {
    {"full", Stat_full, METH_NOARGS,
     "full() -> os.stat_result\n\nThe os.stat_result os.lstat gave for the same name."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StatType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "architect_cleanup._fsops.Stat",
    .tp_basicsize = sizeof(StatObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An lstat taken by Prefetch: the attributes of os.stat_result, each made when "
              "read.",
    .tp_getset = Stat_getset,
    .tp_methods = Stat_methods,
    .tp_repr = Stat_repr,
};

/* A list of n os.stat_results, None where *ok* is 0. */
static PyObject *
stats_list(Py_ssize_t n, const struct stat *sts, const char *ok)
{
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = ok[i] ? stat_result(&sts[i]) : Py_NewRef(Py_None);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

/* Each name of *names* (a list of str or bytes) encoded as os functions encode a path. */
static PyObject **
encode_names(PyObject *names, Py_ssize_t n)
{
    PyObject **enc = PyMem_Calloc(n ? (size_t)n : 1, sizeof *enc);
    if (enc == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyUnicode_FSConverter(PyList_GET_ITEM(names, i), &enc[i])) {
            for (Py_ssize_t j = 0; j < i; j++)
                Py_DECREF(enc[j]);
            PyMem_Free(enc);
            return NULL;
        }
    }
    return enc;
}

PyDoc_STRVAR(lstat_many_doc,
"lstat_many(fd, names) -> list\n\n"
"os.lstat(name, dir_fd=fd) of each name (a list of str), in order: its os.stat_result, or\n"
"None where the call failed (the name vanished since the listing, or cannot be read).");

static PyObject *
lstat_many(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "iO!:lstat_many", &fd, &PyList_Type, &names))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(names);
    PyObject **enc = encode_names(names, n);
    if (enc == NULL)
        return NULL;
    struct stat *sts = PyMem_Malloc((n ? (size_t)n : 1) * sizeof *sts);
    char *ok = PyMem_Malloc(n ? (size_t)n : 1);
    PyObject *out = NULL;
    if (sts == NULL || ok == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        ok[i] = fstatat(fd, PyBytes_AS_STRING(enc[i]), &sts[i], AT_SYMLINK_NOFOLLOW) == 0;
    Py_END_ALLOW_THREADS
    out = stats_list(n, sts, ok);
done:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(enc[i]);
    PyMem_Free(enc);
    PyMem_Free(sts);
    PyMem_Free(ok);
    return out;
}

/* ---- unlink_many ---------------------------------------------------------------------- */

/* The outcome of one unlink_many item: 0 unlinked, CHANGED, or the errno of the failed call */
#define CHANGED (-1)

typedef struct {
    unsigned long long dev, ino;
    long long mtime_ns, ctime_ns;
} judged_t;

/* seconds and nanoseconds as one count of nanoseconds; 0 when it does not fit */
static int
ns_of(const struct timespec *ts, long long *out)
{
    long long s;
    return !__builtin_mul_overflow((long long)ts->tv_sec, 1000000000LL, &s)
           && !__builtin_add_overflow(s, (long long)ts->tv_nsec, out);
}

static int
unlink_one(int fd, const char *name, const judged_t *was)
{
    struct stat st;
    long long m, c;
    if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno;
    /* a time that no longer fits in 64 bits cannot be the judged one, which did */
    if (!ns_of(&st.st_mtim, &m) || !ns_of(&st.st_ctim, &c)
            || (unsigned long long)st.st_dev != was->dev
            || (unsigned long long)st.st_ino != was->ino
            || m != was->mtime_ns || c != was->ctime_ns || S_ISDIR(st.st_mode))
        return CHANGED;
    return unlinkat(fd, name, 0) == 0 ? 0 : errno;
}

PyDoc_STRVAR(unlink_many_doc,
"unlink_many(fd, items) -> list | None\n\n"
"For each (name, st_dev, st_ino, st_mtime_ns, st_ctime_ns) of *items*, in order: lstat the\n"
"name in the directory *fd* right before its own unlink, and unlink it only if it is still\n"
"that file and not a directory. Each outcome is 0 (unlinked), -1 (changed since it was\n"
"judged, left alone) or the errno of the lstat or the unlink. None, with nothing done, when\n"
"a judged time does not fit in 64 bits (the caller's own loop then does the work).");

static PyObject *
unlink_many(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!:unlink_many", &fd, &PyList_Type, &items))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *names = PyList_New(n);
    if (names == NULL)
        return NULL;
    judged_t *was = PyMem_Calloc(n ? (size_t)n : 1, sizeof *was);
    int *rc = PyMem_Calloc(n ? (size_t)n : 1, sizeof *rc);
    PyObject **enc = NULL, *out = NULL;
    int too_big = 0;
    if (was == NULL || rc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *dev, *ino, *m, *c;
        int over_m = 0, over_c = 0;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(items, i), "OOOOO:unlink_many", &name, &dev,
                              &ino, &m, &c))
            goto done;
        PyList_SET_ITEM(names, i, Py_NewRef(name));
        was[i].dev = PyLong_AsUnsignedLongLong(dev);
        was[i].ino = PyLong_AsUnsignedLongLong(ino);
        was[i].mtime_ns = PyLong_AsLongLongAndOverflow(m, &over_m);
        was[i].ctime_ns = PyLong_AsLongLongAndOverflow(c, &over_c);
        if (PyErr_Occurred())
            goto done;
        too_big |= over_m | over_c;
    }
    if (too_big) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    enc = encode_names(names, n);
    if (enc == NULL)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        rc[i] = unlink_one(fd, PyBytes_AS_STRING(enc[i]), &was[i]);
    Py_END_ALLOW_THREADS
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(rc[i]);
        if (v == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, v);
    }
done:
    if (enc != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_DECREF(enc[i]);
        PyMem_Free(enc);
    }
    Py_DECREF(names);
    PyMem_Free(was);
    PyMem_Free(rc);
    return out;
}

/* ---- Prefetch ------------------------------------------------------------------------ */

/* One directory handed to the prefetching thread: listed and its kept names lstat()ed there. */
typedef struct job {
    int fd;                   /* the caller keeps it open until take() returns this job */
    PyObject *keep;           /* the classes, whose bytes the texts point into */
    class_t *classes;
    filter_t filter;
    names_t nm;
    struct stat *sts;
    char *ok;
    long long total;
    int err;
    int done;                 /* set by the thread, under the lock */
    struct job *next;
} job_t;

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    int started, closed, stopping;
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a job to do, or stop */
    pthread_cond_t finished;  /* a job is done */
    job_t *head;              /* the oldest job not taken */
    job_t *tail;              /* the newest */
    job_t *todo;              /* the oldest job not started */
} Prefetch;

/* The thread's work on one job: no Python object is touched, the GIL is never taken. */
static void
job_run(job_t *j)
{
    j->err = list_names(j->fd, &j->filter, &j->nm, &j->total);
    if (j->err != 0 || j->nm.n == 0)
        return;
    j->sts = malloc(j->nm.n * sizeof *j->sts);
    j->ok = malloc(j->nm.n);
    if (j->sts == NULL || j->ok == NULL) {
        j->err = ENOMEM;
        return;
    }
    for (size_t i = 0; i < j->nm.n; i++)
        j->ok[i] = fstatat(j->fd, j->nm.buf + j->nm.offs[i], &j->sts[i],
                           AT_SYMLINK_NOFOLLOW) == 0;
}

/* Free a job (with the GIL: it holds references). */
static void
job_free(job_t *j)
{
    Py_XDECREF(j->keep);
    for (Py_ssize_t g = 0; j->classes != NULL && g < j->filter.ncls; g++) {
        PyMem_Free(j->classes[g].suf);
        PyMem_Free(j->classes[g].inf);
        PyMem_Free(j->classes[g].oth);
    }
    PyMem_Free(j->classes);
    free(j->nm.buf);
    free(j->nm.offs);
    free(j->nm.codes);
    free(j->sts);
    free(j->ok);
    PyMem_Free(j);
}

static void *
prefetch_main(void *arg)
{
    Prefetch *self = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* signals are the run's thread's */
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->stopping && self->todo == NULL)
            pthread_cond_wait(&self->wake, &self->mu);
        if (self->stopping)
            break;
        job_t *j = self->todo;
        self->todo = j->next;
        pthread_mutex_unlock(&self->mu);
        job_run(j);
        pthread_mutex_lock(&self->mu);
        j->done = 1;
        pthread_cond_broadcast(&self->finished);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

static PyObject *
Prefetch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Prefetch", kwlist))
        return NULL;
    Prefetch *self = (Prefetch *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->wake, NULL);
    pthread_cond_init(&self->finished, NULL);
    int rc = pthread_create(&self->thread, NULL, prefetch_main, self);
    if (rc != 0) {
        Py_DECREF(self);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->started = 1;
    return (PyObject *)self;
}

/* Stop the thread (it finishes the job it is on), then free every job not taken. */
static void
prefetch_stop(Prefetch *self)
{
    if (self->closed)
        return;
    self->closed = 1;
    if (self->started) {
        pthread_mutex_lock(&self->mu);
        self->stopping = 1;
        pthread_cond_broadcast(&self->wake);
        pthread_mutex_unlock(&self->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
    }
    while (self->head != NULL) {
        job_t *j = self->head;
        self->head = j->next;
        job_free(j);
    }
    self->tail = self->todo = NULL;
}

static int
prefetch_open(Prefetch *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_ValueError, "the prefetch is closed");
        return -1;
    }
    return 0;
}

/* The classes of fs.group_classes into *j* (None: every name, UNDECIDED). */
static int
classes_of(job_t *j, PyObject *obj)
{
    j->filter.every = obj == Py_None;
    if (j->filter.every)
        return 0;
    if (!PyTuple_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of classes or None");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    j->classes = PyMem_Calloc(n ? (size_t)n : 1, sizeof *j->classes);
    if (j->classes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    j->filter.classes = j->classes;
    j->filter.ncls = n;
    for (Py_ssize_t g = 0; g < n; g++) {
        PyObject *suf, *inf, *oth, *item = PyTuple_GET_ITEM(obj, g);
        class_t *c = &j->classes[g];
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "a class is a tuple (suffixes, infixes, others)");
            return -1;
        }
        if (!PyArg_ParseTuple(item, "O!O!O:class", &PyTuple_Type, &suf,
                              &PyTuple_Type, &inf, &oth)
                || texts_of(suf, &c->suf, &c->ns) < 0 || texts_of(inf, &c->inf, &c->ni) < 0)
            return -1;
        c->ask = oth == Py_None;
        if (!c->ask && texts_of(oth, &c->oth, &c->no) < 0)
            return -1;
    }
    return 0;
}

PyDoc_STRVAR(Prefetch_submit_doc,
"submit(fd, classes) -> None\n\n"
"Hand the directory *fd* to the thread: list it, keeping each name that one of *classes*\n"
"(fs.group_classes; None: every name) may take, with its class, then lstat each name kept.\n"
"The descriptor must stay open until take() returns its result.");

static PyObject *
Prefetch_submit(Prefetch *self, PyObject *args)
{
    int fd;
    PyObject *classes;
    if (!PyArg_ParseTuple(args, "iO:submit", &fd, &classes) || prefetch_open(self) < 0)
        return NULL;
    job_t *j = PyMem_Calloc(1, sizeof *j);
    if (j == NULL)
        return PyErr_NoMemory();
    j->fd = fd;
    j->keep = Py_NewRef(classes);
    if (classes_of(j, classes) < 0) {
        job_free(j);
        return NULL;
    }
    pthread_mutex_lock(&self->mu);
    if (self->tail != NULL)
        self->tail->next = j;
    else
        self->head = j;
    self->tail = j;
    if (self->todo == NULL)
        self->todo = j;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->mu);
    Py_RETURN_NONE;
}

/* A job's names by class, in the order each class first took one: [(class, [names])], and
   each name's lstat (None where it failed) in a dict in listing order. */
static PyObject *
job_result(const job_t *j)
{
    PyObject *lists[UNDECIDED + 1] = {0};
    int order[UNDECIDED + 1];
    int norder = 0;
    PyObject *known = PyDict_New(), *sorted = NULL, *out = NULL;
    if (known == NULL)
        return NULL;
    for (size_t i = 0; i < j->nm.n; i++) {
        const char *s = j->nm.buf + j->nm.offs[i];
        PyObject *name = PyUnicode_DecodeFSDefaultAndSize(s, (Py_ssize_t)strlen(s));
        PyObject *st = name == NULL ? NULL
            : j->ok[i] ? light_stat(&j->sts[i]) : Py_NewRef(Py_None);
        int code = j->nm.codes[i];
        if (st != NULL && lists[code] == NULL) {
            lists[code] = PyList_New(0);
            order[norder++] = code;
        }
        int bad = st == NULL || lists[code] == NULL || PyDict_SetItem(known, name, st) < 0
            || PyList_Append(lists[code], name) < 0;
        Py_XDECREF(name);
        Py_XDECREF(st);
        if (bad)
            goto done;
    }
    sorted = PyList_New(norder);
    if (sorted == NULL)
        goto done;
    for (int k = 0; k < norder; k++) {
        PyObject *pair = Py_BuildValue("(iO)", order[k], lists[order[k]]);
        if (pair == NULL)
            goto done;
        PyList_SET_ITEM(sorted, k, pair);
    }
    out = Py_BuildValue("(OOL)", sorted, known, j->total);
done:
    for (int k = 0; k < norder; k++)
        Py_XDECREF(lists[order[k]]);
    Py_XDECREF(sorted);
    Py_DECREF(known);
    return out;
}

PyDoc_STRVAR(Prefetch_take_doc,
"take() -> (sorted, known, total)\n\n"
"The oldest job's result, once the thread has done it: the names kept by class, in the\n"
"order each class first took one ([(class, [names])]; class 255: the matcher decides),\n"
"each name's lstat (a Stat: os.stat_result's attributes; None where it failed) in a dict\n"
"in listing order, and\n"
"how many names the directory held. Names are decoded as os.listdir decodes them. Raises\n"
"the OSError of the listing, or LookupError when no job is waiting.");

static PyObject *
Prefetch_take(Prefetch *self, PyObject *Py_UNUSED(ignored))
{
    if (prefetch_open(self) < 0)
        return NULL;
    job_t *j = self->head;
    if (j == NULL) {
        PyErr_SetString(PyExc_LookupError, "no directory was handed to the prefetch");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mu);
    while (!j->done)
        pthread_cond_wait(&self->finished, &self->mu);
    self->head = j->next;
    if (self->tail == j)
        self->tail = NULL;
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    PyObject *out = set_error(j->err) < 0 ? NULL : job_result(j);
    job_free(j);
    return out;
}

PyDoc_STRVAR(Prefetch_close_doc,
"close() -> None\n\n"
"Stop the thread (after the directory it is on) and drop the results not taken.");

static PyObject *
Prefetch_close(Prefetch *self, PyObject *Py_UNUSED(ignored))
{
    prefetch_stop(self);
    Py_RETURN_NONE;
}

static void
Prefetch_dealloc(Prefetch *self)
{
    prefetch_stop(self);
    pthread_mutex_destroy(&self->mu);
    pthread_cond_destroy(&self->wake);
    pthread_cond_destroy(&self->finished);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Prefetch_methods[] = {
    {"submit", (PyCFunction)Prefetch_submit, METH_VARARGS, Prefetch_submit_doc},
    {"take", (PyCFunction)Prefetch_take, METH_NOARGS, Prefetch_take_doc},
    {"close", (PyCFunction)Prefetch_close, METH_NOARGS, Prefetch_close_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Prefetch_doc,
"Prefetch()\n\n"
"A thread of its own that lists directories and lstat()s their names ahead of the caller,\n"
"without the GIL (the dry run's walk: its Python work overlaps the kernel's). Results are\n"
"taken in the order the directories were handed in.");

static PyTypeObject PrefetchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "architect_cleanup._fsops.Prefetch",
    .tp_basicsize = sizeof(Prefetch),
    .tp_dealloc = (destructor)Prefetch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Prefetch_doc,
    .tp_methods = Prefetch_methods,
    .tp_new = Prefetch_new,
};

/* ---- the module ----------------------------------------------------------------------- */

static PyMethodDef fsops_methods[] = {
    {"listdir_filter", listdir_filter, METH_VARARGS, listdir_filter_doc},
    {"lstat_many", lstat_many, METH_VARARGS, lstat_many_doc},
    {"unlink_many", unlink_many, METH_VARARGS, unlink_many_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fsops_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "architect_cleanup._fsops",
    .m_doc = "One directory's listing, lstat()s and checked unlinks, without the GIL.",
    .m_size = -1,
    .m_methods = fsops_methods,
};

PyMODINIT_FUNC
PyInit__fsops(void)
{
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL)
        return NULL;
    stat_result_type = (PyTypeObject *)PyObject_GetAttrString(os, "stat_result");
    Py_DECREF(os);
    if (stat_result_type == NULL)
        return NULL;
    if (PyType_Ready(&PrefetchType) < 0 || PyType_Ready(&StatType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fsops_module);
    if (m != NULL && (PyModule_AddIntConstant(m, "CHANGED", CHANGED) < 0
                      || PyModule_AddIntConstant(m, "UNDECIDED", UNDECIDED) < 0
                      || PyModule_AddObjectRef(m, "Prefetch", (PyObject *)&PrefetchType) < 0
                      || PyModule_AddObjectRef(m, "Stat", (PyObject *)&StatType) < 0))
        Py_CLEAR(m);
    return m;
}
