/*
 * loadclient: opens N Server-Sent Events streams over HTTP/1.1 and measures them.
 *
 * Each event's data is JSON holding {"seq":<n>,"t":<publish time, ns since the epoch>}.
 * Per connection it checks that seq goes 1, 2, 3... (gaps are lost events, a seq not
 * above the last one is a duplicate) and records publish-to-receive latency in a
 * log-linear histogram. A dropped stream is reopened with Last-Event-ID.
 *
 * The connections are split over --threads threads, each with its own epoll. The
 * main thread talks to the harness over stdin/stdout:
 *   stdout "READY <connected> <conns>"  once every stream got its 200 (or --ready-timeout passed)
 *   stdin  "GO"                         the publisher starts now (CPU is measured from here)
 *   stdin  "END <final seq>"            the publisher is done; finish once every stream has
 *                                       seen <final seq>, or --drain seconds later
 *   stdin  "QUIT"                       finish now
 * and prints one JSON object with the figures on exit. With --final given up front
 * (the reconnect storm, the joins) it finishes by itself once every stream is caught up;
 * with --hold as well it then prints "CAUGHT <n>" and waits for QUIT (so the harness can
 * read the server's CPU time before the streams close).
 *
 * --cursors FILE gives each topic its own Last-Event-ID (line i: topic i; an empty line:
 * none). Per stream it records when its first connect started, when its 200 came and when
 * its first event came; the "join" object of the result has the latest of each and their
 * spread per stream (the joins of bench/run.py).
 *
 * --path is a template of the request target: "%d" is the stream's topic index, "%%" a
 * percent sign, and any other "%" stays as it is, so a URL-encoded query can be given as
 * it goes on the wire: --path '/.well-known/mercure?match=https%3A%2F%2Fbench.example%2Fb%d'.
 * Only seq and t in an event's data count: the event IDs (stream IDs, Mercure's "#3:..." or
 * a publisher's own) are kept as they come, for Last-Event-ID on a reconnect.
 *
 * Build: cc -O2 -pthread -o loadclient loadclient.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX 256
#define LINE_MAX_BYTES (1 << 20)
#define READ_BUF (256 * 1024)

/* Histogram of microseconds: exact below 128, then 64 sub-buckets per power of two. */
#define HIST_SUB 64
#define HIST_BUCKETS (128 + 58 * HIST_SUB)

enum { ST_IDLE, ST_CONNECTING, ST_HEADERS, ST_STREAM, ST_FAILED };
enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END };

typedef struct {
    int fd;
    int idx;
    int topic;
    int state;
    int chunked;
    int chunk_state;
    long long chunk_left;
    char *buf; /* header bytes, then the partial SSE line */
    size_t len, cap;
    /* the event being read */
    long long ev_seq, ev_t;
    int ev_data, ev_other;
    char ev_id[ID_MAX];
    int ev_has_id;
    /* the stream so far */
    char last_id[ID_MAX];
    long long last_seq;
    long long received, lost, dup;
    int reconnects;
    uint64_t retry_at_ns;
    uint64_t caught_ns;
    uint64_t connect_ns, open_ns, first_ns; /* first connect started, first 200, first event */
} conn_t;

typedef struct {
    uint64_t hist[HIST_BUCKETS];
    uint64_t lat_max_us;
    double lat_sum_us;
    long long deliveries, lost, dup, resets, other_events, reconnects;
    long long http_errors, connect_errors, protocol_errors;
    uint64_t first_ns, last_ns;
} stats_t;

typedef struct {
    int id;
    int ep;
    conn_t *conns;
    int nconns;
    int pending; /* connections started but without a 200 yet */
    int next_start;
    stats_t st;
    atomic_int connected;
    atomic_int caught_up;
    pthread_t th;
} worker_t;

/* options */
static const char *o_host = "127.0.0.1";
static int o_port = 8000;
static const char *o_path = "/events?topic=b%d";
static int o_topics = 1;
static int o_conns = 100;
static int o_threads = 2;
static int o_burst = 256;
static const char *o_last_id = "";
static const char *o_extra_header = "";
static double o_ready_timeout = 60;
static double o_drain = 10;
static double o_max_time = 600;
static long long o_final = 0; /* storm: known up front */
static long long o_start_seq = 1;
static int o_reconnect = 1;
static int o_coalesce_us = 0;
static const char *o_cursors = NULL;
static int o_hold = 0;

static struct sockaddr_in g_addr;
static atomic_int g_stop;
static atomic_llong g_final;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int hist_bucket(uint64_t v) {
    if (v < 128) return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= 7 */
    int sub = (int)((v >> (e - 6)) & (HIST_SUB - 1));
    int b = 128 + (e - 7) * HIST_SUB + sub;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static uint64_t hist_value(int b) { /* upper edge of the bucket */
    if (b < 128) return (uint64_t)b;
    int e = (b - 128) / HIST_SUB + 7;
    int sub = (b - 128) % HIST_SUB;
    return ((uint64_t)(HIST_SUB + sub + 1) << (e - 6)) - 1;
}

static void buf_append(conn_t *c, const char *p, size_t n) {
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + n) cap *= 2;
        c->buf = realloc(c->buf, cap);
        if (!c->buf) { perror("realloc"); exit(2); }
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

/* An integer after `key` in p[0..n), or -1. */
static long long json_int(const char *p, size_t n, const char *key, size_t klen) {
    const char *k = memmem(p, n, key, klen);
    if (!k) return -1;
    const char *q = k + klen, *end = p + n;
    while (q < end && *q == ' ') q++;
    long long v = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') { v = v * 10 + (*q - '0'); q++; digits++; }
    return digits ? v : -1;
}

static void start_conn(worker_t *w, conn_t *c);

static void close_conn(worker_t *w, conn_t *c, int retry_ms) {
    if (c->fd >= 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->state == ST_STREAM) atomic_fetch_sub(&w->connected, 1);
    if (c->state == ST_CONNECTING || c->state == ST_HEADERS) w->pending--;
    c->len = 0;
    c->ev_data = c->ev_other = c->ev_has_id = 0;
    if (o_reconnect && !atomic_load(&g_stop)) {
        c->state = ST_IDLE;
        c->retry_at_ns = now_ns() + (uint64_t)retry_ms * 1000000ull;
    } else {
        c->state = ST_FAILED;
    }
}

static void dispatch(worker_t *w, conn_t *c, uint64_t t_recv) {
    if (c->ev_has_id) memcpy(c->last_id, c->ev_id, ID_MAX);
    if (c->ev_other) {
        w->st.other_events++;
    } else if (c->ev_data) {
        long long s = c->ev_seq;
        if (s < 0) {
            w->st.protocol_errors++;
        } else if (s <= c->last_seq && c->received) {
            c->dup++;
        } else {
            long long expect = c->received ? c->last_seq + 1 : o_start_seq;
            if (s > expect) c->lost += s - expect;
            c->last_seq = s;
            c->received++;
            if (!c->first_ns) c->first_ns = t_recv;
            w->st.deliveries++;
            if (!w->st.first_ns) w->st.first_ns = t_recv;
            w->st.last_ns = t_recv;
            if (c->ev_t > 0) {
                uint64_t t_pub = (uint64_t)c->ev_t;
                if (t_pub < 100000000000000000ull) t_pub *= 1000; /* microseconds given */
                uint64_t us = t_recv > t_pub ? (t_recv - t_pub) / 1000 : 0;
                w->st.hist[hist_bucket(us)]++;
                w->st.lat_sum_us += (double)us;
                if (us > w->st.lat_max_us) w->st.lat_max_us = us;
            }
            long long fin = atomic_load_explicit(&g_final, memory_order_relaxed);
            if (fin > 0 && s >= fin && !c->caught_ns) c->caught_ns = t_recv;
        }
    }
    c->ev_data = c->ev_other = c->ev_has_id = 0;
    c->ev_seq = c->ev_t = -1;
}

static void sse_line(worker_t *w, conn_t *c, const char *p, size_t n, uint64_t t_recv) {
    if (n && p[n - 1] == '\r') n--;
    if (n == 0) { dispatch(w, c, t_recv); return; }
    if (p[0] == ':') return; /* comment: heartbeat */
    const char *colon = memchr(p, ':', n);
    size_t flen = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && *v == ' ') { v++; vlen--; }
    if (flen == 4 && memcmp(p, "data", 4) == 0) {
        c->ev_data = 1;
        long long s = json_int(v, vlen, "\"seq\":", 6);
        if (s >= 0) c->ev_seq = s;
        long long t = json_int(v, vlen, "\"t\":", 4);
        if (t >= 0) c->ev_t = t;
    } else if (flen == 2 && memcmp(p, "id", 2) == 0) {
        if (vlen < ID_MAX && !memchr(v, 0, vlen)) {
            memcpy(c->ev_id, v, vlen);
            c->ev_id[vlen] = 0;
            c->ev_has_id = 1;
        }
    } else if (flen == 5 && memcmp(p, "event", 5) == 0) {
        if (!(vlen == 7 && memcmp(v, "message", 7) == 0)) {
            c->ev_other = 1;
            if (vlen == 12 && memcmp(v, "stream-reset", 12) == 0) w->st.resets++;
        }
    }
}

static int sse_feed(worker_t *w, conn_t *c, const char *p, size_t n, uint64_t t_recv) {
    while (n) {
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            if (c->len + n > LINE_MAX_BYTES) return -1;
            buf_append(c, p, n);
            return 0;
        }
        size_t ll = (size_t)(nl - p);
        if (c->len) {
            buf_append(c, p, ll);
            sse_line(w, c, c->buf, c->len, t_recv);
            c->len = 0;
        } else {
            sse_line(w, c, p, ll, t_recv);
        }
        p = nl + 1;
        n -= ll + 1;
    }
    return 0;
}

/* Body bytes: de-chunk when needed, then parse. -1: the stream is over or broken. */
static int body_feed(worker_t *w, conn_t *c, const char *p, size_t n, uint64_t t_recv) {
    if (!c->chunked) return sse_feed(w, c, p, n, t_recv);
    while (n) {
        switch (c->chunk_state) {
        case CH_SIZE: {
            char ch = *p++;
            n--;
            if (ch >= '0' && ch <= '9') c->chunk_left = c->chunk_left * 16 + (ch - '0');
            else if (ch >= 'a' && ch <= 'f') c->chunk_left = c->chunk_left * 16 + (ch - 'a' + 10);
            else if (ch >= 'A' && ch <= 'F') c->chunk_left = c->chunk_left * 16 + (ch - 'A' + 10);
            else if (ch == ';') c->chunk_state = CH_EXT;
            else if (ch == '\n') {
                if (c->chunk_left == 0) return -1; /* last chunk: the server ended the stream */
                c->chunk_state = CH_DATA;
            } else if (ch != '\r') { w->st.protocol_errors++; return -1; }
            break;
        }
        case CH_EXT:
            while (n && *p != '\n') { p++; n--; }
            if (n) {
                p++; n--;
                if (c->chunk_left == 0) return -1;
                c->chunk_state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t take = n < (size_t)c->chunk_left ? n : (size_t)c->chunk_left;
            if (sse_feed(w, c, p, take, t_recv) < 0) return -1;
            p += take;
            n -= take;
            c->chunk_left -= (long long)take;
            if (c->chunk_left == 0) c->chunk_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END: {
            char ch = *p++;
            n--;
            if (ch == '\n') { c->chunk_state = CH_SIZE; c->chunk_left = 0; }
            break;
        }
        }
    }
    return 0;
}

/* The response head in c->buf ends at `end`. 0: a 200 event stream; -1: refused. */
static int parse_head(worker_t *w, conn_t *c, size_t end) {
    c->buf[end - 1] = 0;
    int status = 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1 || status != 200) {
        w->st.http_errors++;
        return -1;
    }
    c->chunked = 0;
    for (char *line = strstr(c->buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (strncasecmp(l, "transfer-encoding:", 18) == 0) {
            char *v = l + 18;
            char *eol = strstr(v, "\r\n");
            size_t vl = eol ? (size_t)(eol - v) : strlen(v);
            if (memmem(v, vl, "chunked", 7)) c->chunked = 1;
        }
    }
    c->chunk_state = CH_SIZE;
    c->chunk_left = 0;
    return 0;
}

static void on_readable(worker_t *w, conn_t *c, char *rb) {
    for (;;) {
        ssize_t r = read(c->fd, rb, READ_BUF);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (r <= 0) { close_conn(w, c, 0); return; }
        uint64_t t_recv = now_ns();
        const char *p = rb;
        size_t n = (size_t)r;
        if (c->state == ST_HEADERS) {
            size_t old = c->len;
            buf_append(c, p, n);
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!e) {
                if (c->len > 65536) { w->st.protocol_errors++; close_conn(w, c, 1000); }
                if (r < READ_BUF) return;
                continue;
            }
            size_t head = (size_t)(e - c->buf) + 4;
            if (parse_head(w, c, head) < 0) { close_conn(w, c, 1000); return; }
            c->state = ST_STREAM;
            if (!c->open_ns) c->open_ns = t_recv;
            w->pending--;
            atomic_fetch_add(&w->connected, 1);
            size_t body_off = head - old;
            p += body_off;
            n -= body_off;
            c->len = 0;
        }
        if (n && body_feed(w, c, p, n, t_recv) < 0) { close_conn(w, c, 0); return; }
        if (r < READ_BUF) return;
    }
}

/* The request target of topic `topic` from the --path template: "%d" is the topic index,
 * "%%" a percent sign, any other "%" (a URL-encoded byte) is copied as it is. */
static void expand_path(char *out, size_t cap, const char *tmpl, int topic) {
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'd') {
            int w = snprintf(out + n, cap - n, "%d", topic);
            if (w < 0 || (size_t)w >= cap - n) break;
            n += (size_t)w;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            out[n++] = '%';
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = 0;
}

static void send_request(worker_t *w, conn_t *c) {
    char path[1024], req[4096];
    expand_path(path, sizeof path, o_path, c->topic);
    const char *lid = c->last_id[0] ? c->last_id : o_last_id;
    char lid_h[ID_MAX + 32] = "";
    if (lid[0]) snprintf(lid_h, sizeof lid_h, "Last-Event-ID: %s\r\n", lid);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n%s%s\r\n",
                     path, o_host, o_port, lid_h, o_extra_header);
    if (write(c->fd, req, (size_t)n) != n) { w->st.connect_errors++; close_conn(w, c, 200); return; }
    c->state = ST_HEADERS;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void start_conn(worker_t *w, conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { w->st.connect_errors++; c->state = ST_IDLE; c->retry_at_ns = now_ns() + 500000000ull; return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->len = 0;
    c->ev_seq = c->ev_t = -1;
    w->pending++;
    c->state = ST_CONNECTING;
    if (!c->connect_ns) c->connect_ns = now_ns();
    if (c->received || c->reconnects || c->retry_at_ns) c->reconnects++;
    int r = connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (r < 0 && errno != EINPROGRESS) { w->st.connect_errors++; close_conn(w, c, 200); return; }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    char *rb = malloc(READ_BUF);
    struct epoll_event evs[512];
    int burst = o_burst / o_threads;
    if (burst < 1) burst = 1;
    uint64_t last_scan = 0, loop_ns = 0;
    while (!atomic_load(&g_stop)) {
        while (w->pending < burst && w->next_start < w->nconns) start_conn(w, &w->conns[w->next_start++]);
        uint64_t now = now_ns();
        if (now - last_scan > 20000000ull) { /* reconnects and caught-up count, every 20 ms */
            last_scan = now;
            long long fin = atomic_load(&g_final);
            int caught = 0;
            for (int i = 0; i < w->nconns; i++) {
                conn_t *c = &w->conns[i];
                if (c->state == ST_IDLE && i < w->next_start && c->retry_at_ns <= now && w->pending < burst)
                    start_conn(w, c);
                if (fin > 0 && c->received && c->last_seq >= fin) caught++;
            }
            atomic_store(&w->caught_up, caught);
        }
        if (o_coalesce_us) {
            /* let frames pile up in the sockets, so one read takes several (bounded delay) */
            uint64_t spent = now_ns() - loop_ns;
            if (spent < (uint64_t)o_coalesce_us * 1000ull) {
                struct timespec ts = {0, (long)((uint64_t)o_coalesce_us * 1000ull - spent)};
                nanosleep(&ts, NULL);
            }
            loop_ns = now_ns();
        }
        int n = epoll_wait(w->ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
                    w->st.connect_errors++;
                    close_conn(w, c, 200);
                } else {
                    send_request(w, c);
                }
            } else if (c->state == ST_HEADERS || c->state == ST_STREAM) {
                on_readable(w, c, rb);
            }
        }
    }
    free(rb);
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient --port P [--host 127.0.0.1] [--path TEMPLATE (%%d = topic)] [--topics T]\n"
            "  [--conns N] [--threads K] [--burst B] [--last-event-id ID] [--header 'Name: v']\n"
            "  [--ready-timeout S] [--drain S] [--max-time S] [--final SEQ] [--start-seq 1] [--coalesce-us U] [--no-reconnect]\n"
            "  [--cursors FILE] [--hold]\n");
    exit(2);
}

static int lat_pct(const stats_t *s, double q, uint64_t total) {
    if (!total) return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total) want = total - 1;
    uint64_t acc = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        acc += s->hist[b];
        if (acc > want) {
            uint64_t v = hist_value(b);
            return (int)(v > s->lat_max_us ? s->lat_max_us : v);
        }
    }
    return (int)s->lat_max_us;
}

/* Each topic's Last-Event-ID from --cursors (line i: topic i), into its streams' last_id. */
static void load_cursors(conn_t *all) {
    FILE *f = fopen(o_cursors, "r");
    if (!f) { perror(o_cursors); exit(2); }
    char **ids = calloc((size_t)o_topics, sizeof(char *));
    char line[ID_MAX + 2];
    for (int t = 0; t < o_topics && fgets(line, sizeof line, f); t++) {
        line[strcspn(line, "\r\n")] = 0;
        ids[t] = strdup(line);
    }
    fclose(f);
    for (int i = 0; i < o_conns; i++) {
        const char *id = ids[all[i].topic];
        if (!id) { fprintf(stderr, "loadclient: %s has no line for topic %d\n", o_cursors, all[i].topic); exit(2); }
        snprintf(all[i].last_id, ID_MAX, "%s", id);
    }
    for (int t = 0; t < o_topics; t++) free(ids[t]);
    free(ids);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p99 and max of v[0..n) (sorted here), in ms, as a JSON object. */
static int spread_ms(char *out, size_t cap, uint64_t *v, int n) {
    qsort(v, (size_t)n, sizeof(uint64_t), cmp_u64);
    return snprintf(out, cap, "{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", n ? v[n / 2] / 1e6 : 0.0,
                    n ? v[(size_t)(0.99 * (n - 1))] / 1e6 : 0.0, n ? v[n - 1] / 1e6 : 0.0);
}

/* The joins: the latest first connect, 200 and first event (and caught-up) over all streams,
 * absolute (ns since the epoch), and per stream the time from its first connect to its 200
 * and to its first event. */
static void join_figures(const conn_t *all, char *out, size_t cap) {
    uint64_t first_connect = 0, last_connect = 0, last_open = 0, last_first = 0, last_caught = 0;
    uint64_t *open = calloc((size_t)o_conns, sizeof(uint64_t)), *first = calloc((size_t)o_conns, sizeof(uint64_t));
    int nopen = 0, nfirst = 0;
    for (int i = 0; i < o_conns; i++) {
        const conn_t *c = &all[i];
        if (c->connect_ns && (!first_connect || c->connect_ns < first_connect)) first_connect = c->connect_ns;
        if (c->connect_ns > last_connect) last_connect = c->connect_ns;
        if (c->open_ns) {
            if (c->open_ns > last_open) last_open = c->open_ns;
            open[nopen++] = c->open_ns - c->connect_ns;
        }
        if (c->first_ns) {
            if (c->first_ns > last_first) last_first = c->first_ns;
            first[nfirst++] = c->first_ns - c->connect_ns;
        }
        if (c->caught_ns > last_caught) last_caught = c->caught_ns;
    }
    char open_ms[128], first_ms[128];
    spread_ms(open_ms, sizeof open_ms, open, nopen);
    spread_ms(first_ms, sizeof first_ms, first, nfirst);
    snprintf(out, cap,
             "{\"first_connect_ns\":%llu,\"last_connect_ns\":%llu,\"opened\":%d,\"last_open_ns\":%llu,"
             "\"first_event\":%d,\"last_first_event_ns\":%llu,\"last_caught_ns\":%llu,"
             "\"open_ms\":%s,\"first_event_ms\":%s}",
             (unsigned long long)first_connect, (unsigned long long)last_connect, nopen,
             (unsigned long long)last_open, nfirst, (unsigned long long)last_first,
             (unsigned long long)last_caught, open_ms, first_ms);
    free(open);
    free(first);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--host")) o_host = v;
        else if (OPT("--port")) o_port = atoi(v);
        else if (OPT("--path")) o_path = v;
        else if (OPT("--topics")) o_topics = atoi(v);
        else if (OPT("--conns")) o_conns = atoi(v);
        else if (OPT("--threads")) o_threads = atoi(v);
        else if (OPT("--burst")) o_burst = atoi(v);
        else if (OPT("--last-event-id")) o_last_id = v;
        else if (OPT("--header")) {
            static char h[1024];
            snprintf(h, sizeof h, "%s\r\n", v);
            o_extra_header = h;
        } else if (OPT("--ready-timeout")) o_ready_timeout = atof(v);
        else if (OPT("--drain")) o_drain = atof(v);
        else if (OPT("--max-time")) o_max_time = atof(v);
        else if (OPT("--final")) o_final = atoll(v);
        else if (OPT("--start-seq")) o_start_seq = atoll(v);
        else if (OPT("--coalesce-us")) o_coalesce_us = atoi(v);
        else if (OPT("--cursors")) o_cursors = v;
        else if (strcmp(a, "--no-reconnect") == 0) o_reconnect = 0;
        else if (strcmp(a, "--hold") == 0) o_hold = 1;
        else usage();
#undef OPT
    }
    if (o_conns < 1 || o_topics < 1 || o_threads < 1 || o_port < 1 || strlen(o_last_id) >= ID_MAX ||
        strlen(o_path) > 900)
        usage();
    if (o_threads > o_conns) o_threads = o_conns;
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)o_port);
    if (inet_pton(AF_INET, o_host, &g_addr.sin_addr) != 1) { fprintf(stderr, "bad --host %s\n", o_host); return 2; }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)o_conns + 64 > rl.rlim_cur) {
        fprintf(stderr, "loadclient: %d connections need more than the %llu open files allowed\n", o_conns,
                (unsigned long long)rl.rlim_cur);
        return 2;
    }
    atomic_store(&g_final, o_final);

    conn_t *all = calloc((size_t)o_conns, sizeof(conn_t));
    worker_t *ws = calloc((size_t)o_threads, sizeof(worker_t));
    for (int i = 0; i < o_conns; i++) {
        all[i].fd = -1;
        all[i].idx = i;
        all[i].topic = i % o_topics;
        all[i].ev_seq = all[i].ev_t = -1;
    }
    if (o_cursors) load_cursors(all);
    uint64_t t_start = now_ns();
    double cpu_start = cpu_seconds();
    for (int t = 0; t < o_threads; t++) {
        worker_t *w = &ws[t];
        int lo = (int)((long long)o_conns * t / o_threads), hi = (int)((long long)o_conns * (t + 1) / o_threads);
        w->id = t;
        w->conns = all + lo;
        w->nconns = hi - lo;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        pthread_create(&w->th, NULL, worker_main, w);
    }

    int ready_said = 0, stdin_open = 1, caught_said = 0;
    uint64_t go_ns = 0, end_ns = 0, ready_ns = 0;
    double cpu_go = cpu_start;
    char line[256];
    size_t llen = 0;
    const char *why = "max-time";
    for (;;) {
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        int pr = stdin_open ? poll(&pfd, 1, 20) : (usleep(20000), 0);
        uint64_t now = now_ns();
        int connected = 0, caught = 0;
        for (int t = 0; t < o_threads; t++) {
            connected += atomic_load(&ws[t].connected);
            caught += atomic_load(&ws[t].caught_up);
        }
        if (!ready_said && (connected == o_conns || (now - t_start) / 1e9 > o_ready_timeout)) {
            ready_said = 1;
            ready_ns = now;
            printf("READY %d %d\n", connected, o_conns);
            fflush(stdout);
        }
        if (pr > 0) {
            ssize_t r = read(0, line + llen, sizeof line - 1 - llen);
            if (r <= 0) stdin_open = 0;
            else llen += (size_t)r;
            char *nl;
            while ((nl = memchr(line, '\n', llen))) {
                *nl = 0;
                if (strcmp(line, "GO") == 0) { go_ns = now; cpu_go = cpu_seconds(); }
                else if (strncmp(line, "END ", 4) == 0) { atomic_store(&g_final, atoll(line + 4)); end_ns = now; }
                else if (strcmp(line, "QUIT") == 0) { why = caught_said ? "caught-up" : "quit"; goto done; }
                size_t used = (size_t)(nl - line) + 1;
                memmove(line, nl + 1, llen - used);
                llen -= used;
            }
            if (llen == sizeof line - 1) llen = 0;
        }
        long long fin = atomic_load(&g_final);
        if (fin > 0 && caught == o_conns) {
            why = "caught-up";
            if (!o_hold) break;
            if (!caught_said) {
                caught_said = 1;
                printf("CAUGHT %d\n", caught);
                fflush(stdout);
            }
            if (!stdin_open) break;
        }
        if (!caught_said && end_ns && (now - end_ns) / 1e9 > o_drain) { why = "drain-timeout"; break; }
        if ((now - t_start) / 1e9 > o_max_time) break;
    }
done:
    atomic_store(&g_stop, 1);
    uint64_t t_done = now_ns();
    for (int t = 0; t < o_threads; t++) pthread_join(ws[t].th, NULL);
    double cpu_end = cpu_seconds();
    if (!ready_said) { printf("READY 0 %d\n", o_conns); }

    stats_t tot;
    memset(&tot, 0, sizeof tot);
    int connected = 0;
    for (int t = 0; t < o_threads; t++) {
        stats_t *s = &ws[t].st;
        for (int b = 0; b < HIST_BUCKETS; b++) tot.hist[b] += s->hist[b];
        if (s->lat_max_us > tot.lat_max_us) tot.lat_max_us = s->lat_max_us;
        tot.lat_sum_us += s->lat_sum_us;
        tot.deliveries += s->deliveries;
        tot.resets += s->resets;
        tot.other_events += s->other_events;
        tot.http_errors += s->http_errors;
        tot.connect_errors += s->connect_errors;
        tot.protocol_errors += s->protocol_errors;
        if (s->first_ns && (!tot.first_ns || s->first_ns < tot.first_ns)) tot.first_ns = s->first_ns;
        if (s->last_ns > tot.last_ns) tot.last_ns = s->last_ns;
        connected += atomic_load(&ws[t].connected);
    }
    long long fin = atomic_load(&g_final);
    uint64_t *catch = calloc((size_t)o_conns, sizeof(uint64_t));
    int ncaught = 0, nreceiving = 0;
    for (int i = 0; i < o_conns; i++) {
        conn_t *c = &all[i];
        if (fin > 0) {
            long long have = c->received ? c->last_seq : o_start_seq - 1;
            if (fin > have) c->lost += fin - have;
        }
        if (c->received) nreceiving++;
        tot.lost += c->lost;
        tot.dup += c->dup;
        tot.reconnects += c->reconnects;
        if (c->caught_ns) catch[ncaught++] = c->caught_ns - t_start;
    }
    qsort(catch, (size_t)ncaught, sizeof(uint64_t), cmp_u64);
    char join[1024];
    join_figures(all, join, sizeof join);
    uint64_t total = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) total += tot.hist[b];
    printf("{\"why\":\"%s\",\"conns\":%d,\"connected\":%d,\"receiving\":%d,\"final\":%lld,"
           "\"deliveries\":%lld,\"lost\":%lld,\"dup\":%lld,\"resets\":%lld,\"other_events\":%lld,"
           "\"reconnects\":%lld,\"http_errors\":%lld,\"connect_errors\":%lld,\"protocol_errors\":%lld,"
           "\"lat_us\":{\"count\":%llu,\"mean\":%.1f,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d,\"max\":%llu},"
           "\"start_ns\":%llu,\"ready_ns\":%llu,\"go_ns\":%llu,\"end_ns\":%llu,\"done_ns\":%llu,"
           "\"first_delivery_ns\":%llu,\"last_delivery_ns\":%llu,"
           "\"cpu_s_total\":%.3f,\"cpu_s_measure\":%.3f,\"threads\":%d,"
           "\"caught_up\":%d,\"catchup_ms\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},\"join\":%s}\n",
           why, o_conns, connected, nreceiving, fin, tot.deliveries, tot.lost, tot.dup, tot.resets,
           tot.other_events, tot.reconnects, tot.http_errors, tot.connect_errors, tot.protocol_errors,
           (unsigned long long)total, total ? tot.lat_sum_us / (double)total : 0.0, lat_pct(&tot, 0.50, total),
           lat_pct(&tot, 0.90, total), lat_pct(&tot, 0.99, total), lat_pct(&tot, 0.999, total),
           (unsigned long long)tot.lat_max_us, (unsigned long long)t_start, (unsigned long long)ready_ns,
           (unsigned long long)go_ns, (unsigned long long)end_ns, (unsigned long long)t_done,
           (unsigned long long)tot.first_ns, (unsigned long long)tot.last_ns, cpu_end - cpu_start,
           cpu_end - cpu_go, o_threads, ncaught, ncaught ? catch[ncaught / 2] / 1e6 : 0.0,
           ncaught ? catch[(size_t)(0.99 * (ncaught - 1))] / 1e6 : 0.0,
           ncaught ? catch[ncaught - 1] / 1e6 : 0.0, join);
    fflush(stdout);
    _exit(0); /* the kernel closes the sockets faster than we would */
}
