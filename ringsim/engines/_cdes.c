/* ringsim's optimised DES, compiled: the program semantics of ringsim/engines/des.py and the link
 * model of ringsim/engines/network.py (flows sharing directed links max-min fairly), in C.
 *
 * Why it exists: the contended DES is event-bound (a flow start, a flow end and a rank wake-up per
 * rank-step), and CPython spends some microseconds per event; here an event costs tens of
 * nanoseconds. It is a second implementation of exactly the same model, not a different one: the
 * Python DES stays (ringsim uses it where this module was not built, and to record rate logs), and
 * the tests hold both to the plain simpy reference to 1e-9.
 *
 * Model (see des.py and network.py for the prose):
 *  - rank r at step n: post the messages due at the step's start, compute comp[n, r], post the
 *    messages due at the compute's end, wait for the messages the step waits for; the next step
 *    starts when all of that is done. A blocked rank is woken by the last awaited message at
 *    max(message end, its compute end).
 *  - a message starts when its last required post arrives (need[m] counts them), waits its route's
 *    latency, then streams its bytes as a flow.
 *  - streaming flows get max-min fair rates (progressive filling) over the directed links they
 *    cross; rates are recomputed once per instant, for the connected components of flows touched by
 *    a start or an end at that instant. A flow alone on its route streams at the route's bottleneck.
 *  - per link: bytes of finished flows, time with at least one streaming flow ("busy"), and whether
 *    a finished flow crossed it ("used").
 *
 * Interface: run(G, N, M, H, L, buffers...) -> number of ranks that never finished (0: success).
 * Every buffer is a contiguous array (float64 / int64 / uint8) passed through the buffer protocol;
 * outputs are written into caller-allocated arrays. No numpy headers are needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SAT_RTOL 1e-12

/* ---- event heap ------------------------------------------------------------------------------ */
enum { EV_RANK = 0, EV_LATENCY = 1, EV_TIMER = 2, EV_FLUSH = 3 };

typedef struct {
    double t;
    int64_t seq;
    int type;
    int64_t a; /* rank, flow */
    int64_t b; /* timer version */
} Event;

typedef struct {
    Event *v;
    int64_t n, cap;
    int64_t seq;
} Heap;

static int ev_less(const Event *x, const Event *y) { return x->t < y->t || (x->t == y->t && x->seq < y->seq); }

static int heap_push(Heap *h, double t, int type, int64_t a, int64_t b)
{
    if (h->n == h->cap) {
        int64_t cap = h->cap ? 2 * h->cap : 1024;
        Event *v = realloc(h->v, (size_t)cap * sizeof(Event));
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    Event e = {t, h->seq++, type, a, b};
    int64_t i = h->n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!ev_less(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
    return 0;
}

static Event heap_pop(Heap *h)
{
    Event top = h->v[0];
    Event last = h->v[--h->n];
    int64_t i = 0, n = h->n;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ev_less(&h->v[c + 1], &h->v[c])) c++;
        if (!ev_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (n) h->v[i] = last;
    return top;
}

/* ---- state ----------------------------------------------------------------------------------- */
typedef struct {
    int64_t msg, hop;
    double nbytes, remaining, rate, last_s;
    int64_t version;
    int64_t *pos; /* index of this flow in each route link's streaming list */
} Flow;

typedef struct {
    int64_t *flows; /* streaming flow ids */
    int64_t n, cap;
} LinkList;

typedef struct {
    /* program */
    int64_t G, N, M, H, L;
    const double *comp;
    const int64_t *sp_ptr, *sp, *ep_ptr, *ep, *w_ptr, *w;
    const int64_t *src, *dst, *wait, *msg_hop;
    const double *bytes;
    uint8_t *need;
    const int64_t *hop_ptr, *hop_links;
    const double *hop_lat, *hop_bw, *capacity;
    /* outputs */
    double *T, *E, *XS, *XE, *link_bytes, *link_busy;
    uint8_t *link_used;
    /* run state */
    double now;
    Heap heap;
    uint8_t *done;
    int64_t *blocked, *missing, *where, *at_step;
    double *deadline;
    uint8_t *finished;
    Flow *flows;
    int64_t n_flows;
    LinkList *streaming;
    double *busy_since;
    uint8_t *dirty;
    int64_t *dirty_list, n_dirty;
    int flush_pending;
    /* scratch for components */
    int64_t *stamp_link, *stamp_flow, epoch;
    int64_t *comp_flows, *comp_links, *stack;
    double *rem, *new_rate;
    int64_t *cnt;
    uint8_t *frozen;
    int64_t *sat;
} Sim;

static int list_add(LinkList *l, int64_t f, int64_t *pos)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 4;
        int64_t *v = realloc(l->flows, (size_t)cap * sizeof(int64_t));
        if (!v) return -1;
        l->flows = v;
        l->cap = cap;
    }
    *pos = l->n;
    l->flows[l->n++] = f;
    return 0;
}

static int mark_dirty(Sim *s, int64_t lid)
{
    if (!s->dirty[lid]) {
        s->dirty[lid] = 1;
        s->dirty_list[s->n_dirty++] = lid;
    }
    if (!s->flush_pending) {
        s->flush_pending = 1;
        return heap_push(&s->heap, s->now, EV_FLUSH, 0, 0);
    }
    return 0;
}

/* message m's last byte arrived: wake its endpoints blocked on it */
static int msg_done(Sim *s, int64_t m)
{
    s->XE[m] = s->now;
    s->done[m] = 1;
    int64_t ends[2] = {s->src[m], s->dst[m]};
    for (int k = 0; k < 2; k++) {
        int64_t r = ends[k];
        if (s->blocked[r] == s->wait[m]) {
            if (--s->missing[r] == 0) {
                s->blocked[r] = -1;
                double end = s->deadline[r];
                if (heap_push(&s->heap, s->now >= end ? s->now : end, EV_RANK, r, 0)) return -1;
            }
        }
    }
    return 0;
}

static void register_used(Sim *s, int64_t hop)
{
    for (int64_t j = s->hop_ptr[hop]; j < s->hop_ptr[hop + 1]; j++) s->link_used[s->hop_links[j]] = 1;
}

/* the flow's last byte arrived now */
static int flow_finish(Sim *s, int64_t fid, int streaming)
{
    Flow *f = &s->flows[fid];
    f->remaining = 0.0;
    int64_t a = s->hop_ptr[f->hop], b = s->hop_ptr[f->hop + 1];
    for (int64_t j = a; j < b; j++) {
        int64_t lid = s->hop_links[j];
        s->link_bytes[lid] += f->nbytes;
        if (streaming) {
            LinkList *l = &s->streaming[lid];
            int64_t p = f->pos[j - a];
            int64_t moved = l->flows[--l->n];
            if (p != l->n) {
                l->flows[p] = moved;
                Flow *g = &s->flows[moved];
                int64_t ga = s->hop_ptr[g->hop], gb = s->hop_ptr[g->hop + 1];
                for (int64_t k = ga; k < gb; k++)
                    if (s->hop_links[k] == lid) { g->pos[k - ga] = p; break; }
            }
            if (l->n) {
                if (mark_dirty(s, lid)) return -1;
            } else {
                s->link_busy[lid] += s->now - s->busy_since[lid];
            }
        }
    }
    register_used(s, f->hop);
    free(f->pos);
    f->pos = NULL;
    return msg_done(s, f->msg);
}

/* the flow starts streaming now */
static int flow_stream(Sim *s, int64_t fid)
{
    Flow *f = &s->flows[fid];
    f->last_s = s->now;
    int64_t a = s->hop_ptr[f->hop], b = s->hop_ptr[f->hop + 1];
    if (a == b || f->remaining <= 0) return flow_finish(s, fid, 0);
    f->pos = malloc((size_t)(b - a) * sizeof(int64_t));
    if (!f->pos) return -1;
    int solo = 1;
    for (int64_t j = a; j < b; j++) {
        int64_t lid = s->hop_links[j];
        LinkList *l = &s->streaming[lid];
        if (l->n) solo = 0;
        else s->busy_since[lid] = s->now;
        if (list_add(l, fid, &f->pos[j - a])) return -1;
    }
    if (solo) {
        f->rate = s->hop_bw[f->hop];
        f->version++;
        return heap_push(&s->heap, s->now + f->remaining / f->rate, EV_TIMER, fid, f->version);
    }
    /* its route lies in one component: marking one link seeds it */
    return mark_dirty(s, s->hop_links[a]);
}

static int post(Sim *s, int64_t m)
{
    if (--s->need[m]) return 0;
    s->XS[m] = s->now;
    if (s->n_flows == s->M) return -1;
    int64_t fid = s->n_flows++;
    Flow *f = &s->flows[fid];
    f->msg = m;
    f->hop = s->msg_hop[m];
    f->nbytes = f->remaining = s->bytes[m];
    f->rate = 0.0;
    f->version = 0;
    f->pos = NULL;
    double lat = s->hop_lat[f->hop];
    if (lat > 0) return heap_push(&s->heap, s->now + lat, EV_LATENCY, fid, 0);
    return flow_stream(s, fid);
}

/* max-min rates of the component reached from seed link; returns 0 or -1 */
static int recompute(Sim *s, int64_t seed)
{
    int64_t e = ++s->epoch;
    int64_t nf = 0, nl = 0, top = 0;
    s->stamp_link[seed] = e;
    s->stack[top++] = seed;
    s->comp_links[nl++] = seed;
    while (top) {
        int64_t lid = s->stack[--top];
        LinkList *l = &s->streaming[lid];
        for (int64_t i = 0; i < l->n; i++) {
            int64_t fid = l->flows[i];
            if (s->stamp_flow[fid] == e) continue;
            s->stamp_flow[fid] = e;
            s->comp_flows[nf++] = fid;
            Flow *f = &s->flows[fid];
            for (int64_t j = s->hop_ptr[f->hop]; j < s->hop_ptr[f->hop + 1]; j++) {
                int64_t k = s->hop_links[j];
                if (s->stamp_link[k] != e) {
                    s->stamp_link[k] = e;
                    s->stack[top++] = k;
                    s->comp_links[nl++] = k;
                }
            }
        }
    }
    /* progressive filling (network.py: _progressive_filling) */
    for (int64_t i = 0; i < nl; i++) {
        int64_t lid = s->comp_links[i];
        s->rem[lid] = s->capacity[lid];
        s->cnt[lid] = s->streaming[lid].n;
    }
    for (int64_t i = 0; i < nf; i++) s->frozen[s->comp_flows[i]] = 0;
    double level = 0.0;
    int64_t left = nf;
    while (left > 0) {
        double delta = INFINITY;
        for (int64_t i = 0; i < nl; i++) {
            int64_t lid = s->comp_links[i];
            if (s->cnt[lid] > 0) {
                double share = s->rem[lid] / (double)s->cnt[lid];
                if (share < delta) delta = share;
            }
        }
        level += delta;
        double limit = delta * (1.0 + SAT_RTOL);
        int64_t nsat = 0;
        for (int64_t i = 0; i < nl; i++) {
            int64_t lid = s->comp_links[i];
            if (s->cnt[lid] > 0) {
                if (s->rem[lid] / (double)s->cnt[lid] <= limit) s->sat[nsat++] = lid;
            }
        }
        for (int64_t i = 0; i < nl; i++) {
            int64_t lid = s->comp_links[i];
            if (s->cnt[lid] > 0) s->rem[lid] -= delta * (double)s->cnt[lid];
        }
        for (int64_t q = 0; q < nsat; q++) {
            LinkList *l = &s->streaming[s->sat[q]];
            for (int64_t i = 0; i < l->n; i++) {
                int64_t fid = l->flows[i];
                if (s->frozen[fid]) continue;
                s->frozen[fid] = 1;
                s->new_rate[fid] = level;
                left--;
                Flow *f = &s->flows[fid];
                for (int64_t j = s->hop_ptr[f->hop]; j < s->hop_ptr[f->hop + 1]; j++) s->cnt[s->hop_links[j]]--;
            }
        }
        if (nsat == 0) return -1; /* cannot happen: the minimum share saturates */
    }
    /* new rates and completion timers */
    double now = s->now;
    for (int64_t i = 0; i < nf; i++) {
        int64_t fid = s->comp_flows[i];
        Flow *f = &s->flows[fid];
        double rate = s->new_rate[fid];
        if (f->rate == rate) continue; /* its timer still holds */
        f->remaining -= f->rate * (now - f->last_s);
        f->last_s = now;
        f->rate = rate;
        f->version++;
        double rem = f->remaining >= 0.0 ? f->remaining : 0.0;
        if (heap_push(&s->heap, now + rem / rate, EV_TIMER, fid, f->version)) return -1;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int flush(Sim *s)
{
    s->flush_pending = 0;
    int64_t n = s->n_dirty;
    if (n > 1) qsort(s->dirty_list, (size_t)n, sizeof(int64_t), cmp_i64);
    int64_t e0 = s->epoch + 1; /* links seen by the components recomputed in this flush */
    for (int64_t i = 0; i < n; i++) {
        int64_t lid = s->dirty_list[i];
        s->dirty[lid] = 0;
        if (s->stamp_link[lid] >= e0 || s->streaming[lid].n == 0) continue;
        if (recompute(s, lid)) return -1;
    }
    s->n_dirty = 0;
    return 0;
}

/* the rank state machine (des.py: ProgramDES._machine) */
static int rank_run(Sim *s, int64_t r)
{
    int64_t G = s->G, N = s->N;
    int64_t n = s->at_step[r], resume = s->where[r];
    for (;;) {
        if (resume == 1) {
            n++;
            s->T[n * G + r] = s->now;
            if (n == N) {
                s->finished[r] = 1;
                s->at_step[r] = n;
                return 0;
            }
        }
        int64_t i = n * G + r;
        if (resume != 2) {
            s->at_step[r] = n;
            double now = s->now;
            for (int64_t j = s->sp_ptr[i]; j < s->sp_ptr[i + 1]; j++)
                if (post(s, s->sp[j])) return -1;
            double c = s->comp[i];
            if (s->ep_ptr[i] == s->ep_ptr[i + 1]) {
                double end = now + c;
                s->E[i] = end;
                int64_t k = 0;
                for (int64_t j = s->w_ptr[i]; j < s->w_ptr[i + 1]; j++) k += !s->done[s->w[j]];
                if (k) {
                    s->blocked[r] = n;
                    s->missing[r] = k;
                    s->deadline[r] = end;
                    s->where[r] = 1;
                    return 0;
                }
                if (c > 0) {
                    s->where[r] = 1;
                    return heap_push(&s->heap, end, EV_RANK, r, 0);
                }
                resume = 1;
                continue;
            }
            if (c > 0) {
                s->where[r] = 2;
                return heap_push(&s->heap, now + c, EV_RANK, r, 0);
            }
        }
        s->E[i] = s->now;
        resume = 1;
        for (int64_t j = s->ep_ptr[i]; j < s->ep_ptr[i + 1]; j++)
            if (post(s, s->ep[j])) return -1;
        int64_t k = 0;
        for (int64_t j = s->w_ptr[i]; j < s->w_ptr[i + 1]; j++) k += !s->done[s->w[j]];
        if (k) {
            s->blocked[r] = n;
            s->missing[r] = k;
            s->deadline[r] = -INFINITY;
            s->where[r] = 1;
            return 0;
        }
    }
}

static int simulate(Sim *s)
{
    for (int64_t r = 0; r < s->G; r++) {
        s->where[r] = 0;
        s->at_step[r] = 0;
        s->blocked[r] = -1;
        if (rank_run(s, r)) return -1;
    }
    while (s->heap.n) {
        Event ev = heap_pop(&s->heap);
        s->now = ev.t;
        int rc = 0;
        switch (ev.type) {
        case EV_RANK: rc = rank_run(s, ev.a); break;
        case EV_LATENCY: rc = flow_stream(s, ev.a); break;
        case EV_TIMER:
            if (s->flows[ev.a].version == ev.b && s->flows[ev.a].pos) rc = flow_finish(s, ev.a, 1);
            break;
        case EV_FLUSH: rc = flush(s); break;
        }
        if (rc) return -1;
    }
    int64_t stuck = 0;
    for (int64_t r = 0; r < s->G; r++) stuck += !s->finished[r];
    return (int)stuck;
}

/* ---- Python entry point ---------------------------------------------------------------------- */
#define NBUF 25

static PyObject *py_run(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t G, N, M, H, L;
    Py_buffer b[NBUF];
    memset(b, 0, sizeof(b));
    if (!PyArg_ParseTuple(args, "nnnnn" "y*y*y*y*y*y*y*" "y*y*y*y*y*w*" "y*y*y*y*y*" "w*w*w*w*w*w*w*",
                          &G, &N, &M, &H, &L,
                          &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6],
                          &b[7], &b[8], &b[9], &b[10], &b[11], &b[12],
                          &b[13], &b[14], &b[15], &b[16], &b[17],
                          &b[18], &b[19], &b[20], &b[21], &b[22], &b[23], &b[24]))
        return NULL;
    Sim s;
    memset(&s, 0, sizeof(s));
    s.G = G; s.N = N; s.M = M; s.H = H; s.L = L;
    s.comp = b[0].buf;
    s.sp_ptr = b[1].buf; s.sp = b[2].buf; s.ep_ptr = b[3].buf; s.ep = b[4].buf; s.w_ptr = b[5].buf; s.w = b[6].buf;
    s.src = b[7].buf; s.dst = b[8].buf; s.wait = b[9].buf; s.msg_hop = b[10].buf; s.bytes = b[11].buf;
    s.need = b[12].buf;
    s.hop_ptr = b[13].buf; s.hop_links = b[14].buf; s.hop_lat = b[15].buf; s.hop_bw = b[16].buf;
    s.capacity = b[17].buf;
    s.T = b[18].buf; s.E = b[19].buf; s.XS = b[20].buf; s.XE = b[21].buf;
    s.link_bytes = b[22].buf; s.link_busy = b[23].buf; s.link_used = b[24].buf;
    int rc = -1;
    size_t m1 = (size_t)(M > 0 ? M : 1), g1 = (size_t)(G > 0 ? G : 1), l1 = (size_t)(L > 0 ? L : 1);
    s.done = calloc(m1, 1);
    s.blocked = calloc(g1, sizeof(int64_t));
    s.missing = calloc(g1, sizeof(int64_t));
    s.where = calloc(g1, sizeof(int64_t));
    s.at_step = calloc(g1, sizeof(int64_t));
    s.deadline = calloc(g1, sizeof(double));
    s.finished = calloc(g1, 1);
    s.flows = calloc(m1, sizeof(Flow));
    s.streaming = calloc(l1, sizeof(LinkList));
    s.busy_since = calloc(l1, sizeof(double));
    s.dirty = calloc(l1, 1);
    s.dirty_list = calloc(l1, sizeof(int64_t));
    s.stamp_link = calloc(l1, sizeof(int64_t));
    s.stamp_flow = calloc(m1, sizeof(int64_t));
    s.comp_flows = calloc(m1, sizeof(int64_t));
    s.comp_links = calloc(l1, sizeof(int64_t));
    s.stack = calloc(l1, sizeof(int64_t));
    s.rem = calloc(l1, sizeof(double));
    s.cnt = calloc(l1, sizeof(int64_t));
    s.sat = calloc(l1, sizeof(int64_t));
    s.new_rate = calloc(m1, sizeof(double));
    s.frozen = calloc(m1, 1);
    if (s.done && s.blocked && s.missing && s.where && s.at_step && s.deadline && s.finished && s.flows &&
        s.streaming && s.busy_since && s.dirty && s.dirty_list && s.stamp_link && s.stamp_flow && s.comp_flows &&
        s.comp_links && s.stack && s.rem && s.cnt && s.sat && s.new_rate && s.frozen) {
        Py_BEGIN_ALLOW_THREADS
        rc = simulate(&s);
        Py_END_ALLOW_THREADS
    }
    for (int64_t i = 0; i < s.n_flows; i++) free(s.flows[i].pos);
    if (s.streaming)
        for (int64_t l = 0; l < L; l++) free(s.streaming[l].flows);
    free(s.heap.v);
    free(s.done); free(s.blocked); free(s.missing); free(s.where); free(s.at_step); free(s.deadline);
    free(s.finished); free(s.flows); free(s.streaming); free(s.busy_since); free(s.dirty); free(s.dirty_list);
    free(s.stamp_link); free(s.stamp_flow); free(s.comp_flows); free(s.comp_links); free(s.stack); free(s.rem);
    free(s.cnt); free(s.sat); free(s.new_rate); free(s.frozen);
    for (int i = 0; i < NBUF; i++) PyBuffer_Release(&b[i]);
    if (rc < 0) return PyErr_NoMemory();
    return PyLong_FromLong(rc);
}


/* ---- the fast path's recurrence (ringsim/engines/fast.py: run_fast), the same arithmetic ---------- */
static PyObject *py_recurrence(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t G, N, M;
    Py_buffer b[12];
    memset(b, 0, sizeof(b));
    if (!PyArg_ParseTuple(args, "nnn" "y*y*y*y*y*y*y*y*" "w*w*w*w*", &G, &N, &M,
                          &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7],
                          &b[8], &b[9], &b[10], &b[11]))
        return NULL;
    const double *comp = b[0].buf, *fixed = b[7].buf;
    const int64_t *ptr = b[1].buf, *src = b[2].buf, *dst = b[3].buf;
    const uint8_t *send_end = b[4].buf, *recv_end = b[5].buf, *counts_recv = b[6].buf;
    double *T = b[8].buf, *E = b[9].buf, *XS = b[10].buf, *XE = b[11].buf;
    size_t g1 = (size_t)(G > 0 ? G : 1);
    double *t = calloc(g1, sizeof(double)), *e = calloc(g1, sizeof(double));
    int ok = t != NULL && e != NULL;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t n = 0; n < N; n++) {
            const double *c = comp + n * G;
            double *Tn = T + n * G, *En = E + n * G;
            for (Py_ssize_t r = 0; r < G; r++) {
                Tn[r] = t[r];
                e[r] = t[r] + c[r];
                En[r] = e[r];
            }
            int64_t a = ptr[n], z = ptr[n + 1];
            /* every message of the step starts from the step's start times (or its ranks' compute ends) */
            for (int64_t m = a; m < z; m++) {
                int64_t s_ = src[m], d_ = dst[m];
                double start = send_end[m] ? e[s_] : t[s_];
                if (counts_recv[m]) {
                    double pr = recv_end[m] ? e[d_] : t[d_];
                    if (pr > start) start = pr;
                }
                XS[m] = start;
                XE[m] = start + fixed[m];
            }
            /* the next step starts at the compute's end or the last of the rank's messages */
            for (Py_ssize_t r = 0; r < G; r++) t[r] = e[r];
            for (int64_t m = a; m < z; m++) {
                if (XE[m] > t[src[m]]) t[src[m]] = XE[m];
                if (XE[m] > t[dst[m]]) t[dst[m]] = XE[m];
            }
        }
        for (Py_ssize_t r = 0; r < G; r++) T[N * G + r] = t[r];
        Py_END_ALLOW_THREADS
    }
    free(t);
    free(e);
    for (int i = 0; i < 12; i++) PyBuffer_Release(&b[i]);
    if (!ok) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", py_run, METH_VARARGS, "Run a flat program (see the module source); returns the count of stuck ranks."},
    {"recurrence", py_recurrence, METH_VARARGS, "The fast path's recurrence over a flat program (see fast.py)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdes",
                                    "ringsim's optimised DES, compiled (see ringsim/engines/_cdes.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cdes(void) { return PyModule_Create(&module); }
