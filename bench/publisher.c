/*
 * publisher: publishes {"seq":<n>,"t":<ns since the epoch>} events at a fixed rate, pipelined.
 *
 *   --mode redis      EVALSHA of the hub's publish script (SHA given, loaded beforehand); the
 *                     targets file has one "<stream key> <channel key>" line per topic;
 *                     --announce SPUBLISH for a Redis Cluster node (default PUBLISH).
 *   --mode nchan      HTTP/1.1 POST to Nchan's publisher location; one "<path>" line per topic.
 *   --mode hub        HTTP/1.1 POST --path (/publish) to the hub's gateway, one event per
 *                     request: {"topic":"<t>","data":"<the event, a JSON string>"} with
 *                     Authorization: Bearer --token; one "<topic>" line per topic.
 *   --mode hub-batch  the same, --batch N events per request as a JSON array (or, with
 *                     --ndjson, application/x-ndjson: one object per line); the answer's
 *                     "published" counts as acked and its "failed" as errors. A batch is
 *                     written once it is full or its first event waited --linger-ms.
 *   --mode mercure    HTTP/1.1 POST --path (/.well-known/mercure) to the hub's Mercure face, one
 *                     update per request, application/x-www-form-urlencoded:
 *                     topic=<the topic>&data=<the event>, both URL-encoded, with Authorization:
 *                     Bearer --token; one "<topic>" line per topic (an IRI, as it is); the
 *                     answer (200, text/plain) is the update's ID.
 *
 * Every mode keeps up to --window requests outstanding on each of --conns keep-alive
 * connections (HTTP/1.1 pipelining; a server that answers them one at a time, as uvicorn
 * does, needs several connections). Answers may come with Content-Length or chunked.
 *
 * Events go round-robin over the topics: event k goes to topic k % T with seq k / T + start,
 * so every topic's events are numbered 1, 2, 3... A topic always goes over the same
 * connection, so its events stay in order. The schedule is --rate events/s per topic for
 * --duration seconds (or --count events per topic, as fast as possible when --rate 0).
 * Paced, it publishes the events due in --duration rounded up to whole rounds (all topics),
 * still at the rate; unpaced, it stops at the end of the round under way at the deadline.
 * So every topic ends on the same seq. It then waits for the outstanding answers and prints
 * one JSON object: offered vs achieved.
 * The time stamp "t" of an event is taken when its request is written.
 * --ids-out FILE writes, per topic (line i: topic i), the ID the last answer for it gave
 * (redis: the script's reply; hub: "id"; nchan: "last_message_id"; mercure: the answer's
 * body); not with hub-batch.
 *
 * Build: cc -O2 -o publisher publisher.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_BATCH 10000
#define DATA_MAX (8192 + 512)

enum { M_REDIS, M_NCHAN, M_HUB, M_HUB_BATCH, M_MERCURE };

typedef struct {
    char *p;
    size_t len, cap, off;
} buf_t;

typedef struct {
    int fd;
    buf_t out, in;
    long long outstanding; /* requests written and not answered */
    long long *ring;       /* per outstanding request: its event (single) or its event count (batch) */
    int rhead, rlen;
    long long *pend; /* hub-batch: the events of the batch being collected */
    int npend;
    uint64_t pend_ns;
} pconn_t;

typedef struct {
    char *a, *b; /* redis: stream, channel; nchan: path; hub: topic; mercure: topic, URL-encoded */
    size_t alen, blen;
} target_t;

static int o_mode = M_REDIS;
static const char *o_host = "127.0.0.1";
static int o_port = 6379;
static const char *o_targets = NULL;
static double o_rate = 100;
static double o_duration = 10;
static long long o_count = 0;
static long long o_start_seq = 1;
static int o_conns = 1;
static int o_window = 512;
static const char *o_sha = "";
static const char *o_announce = "PUBLISH";
static const char *o_maxlen = "10000";
static const char *o_maxage = "0";
static int o_pad = 0;
static double o_ack_timeout = 30;
static const char *o_token = "";
static const char *o_path = NULL; /* hub: /publish, mercure: /.well-known/mercure */
static int o_batch = 100;
static double o_linger_ms = 20;
static int o_ndjson = 0;
static const char *o_ids_out = NULL;

static target_t *g_t;
static int g_nt;
static long long g_acked, g_errors, g_requests;
static char g_first_err[256];
static char g_last_id[128];
static char **g_ids; /* --ids-out: per topic */
static buf_t g_scratch, g_body;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void b_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) { perror("realloc"); exit(2); }
    b->cap = cap;
}

static void b_add(buf_t *b, const char *s, size_t n) {
    b_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void b_fmt_bulk(buf_t *b, const char *s, size_t n) {
    char h[32];
    int hl = snprintf(h, sizeof h, "$%zu\r\n", n);
    b_add(b, h, (size_t)hl);
    b_add(b, s, n);
    b_add(b, "\r\n", 2);
}

static void load_targets(void) {
    FILE *f = fopen(o_targets, "r");
    if (!f) { perror(o_targets); exit(2); }
    char line[4096];
    int cap = 1024;
    g_t = malloc(sizeof(target_t) * (size_t)cap);
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (!n) continue;
        if (g_nt == cap) { cap *= 2; g_t = realloc(g_t, sizeof(target_t) * (size_t)cap); }
        target_t *t = &g_t[g_nt++];
        char *sp = o_mode == M_MERCURE ? NULL : strchr(line, ' '); /* an IRI may hold none */
        if (o_mode == M_REDIS && !sp) {
            fprintf(stderr, "publisher: target line needs '<stream> <channel>': %s\n", line);
            exit(2);
        }
        if (sp) *sp = 0;
        t->a = strdup(line);
        t->alen = strlen(t->a);
        t->b = sp ? strdup(sp + 1) : NULL;
        t->blen = sp ? strlen(t->b) : 0;
    }
    fclose(f);
    if (!g_nt) { fprintf(stderr, "publisher: no targets in %s\n", o_targets); exit(2); }
}

/* s[0..n) URL-encoded (every byte but A-Z a-z 0-9 - . _ ~ as %XX) onto b. */
static void b_urlencode(buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    b_reserve(b, 3 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~') {
            b->p[b->len++] = (char)ch;
        } else {
            b->p[b->len++] = '%';
            b->p[b->len++] = hex[ch >> 4];
            b->p[b->len++] = hex[ch & 15];
        }
    }
}

/* The event's JSON, its quotes escaped when it goes inside a JSON string. */
static int fmt_data(char *out, size_t cap, long long k, const char *pad, int esc) {
    const char *q = esc ? "\\\"" : "\"";
    long long seq = k / g_nt + o_start_seq;
    int n = snprintf(out, cap, "{%sseq%s:%lld,%st%s:%llu", q, q, seq, q, q, (unsigned long long)now_ns());
    if (o_pad) n += snprintf(out + n, cap - (size_t)n, ",%spad%s:%s%s%s", q, q, q, pad, q);
    n += snprintf(out + n, cap - (size_t)n, "}");
    return n;
}

/* One {"topic":...,"data":...} object of the hub's publish endpoint. */
static int fmt_hub_event(char *out, size_t cap, long long k, const char *pad) {
    target_t *t = &g_t[k % g_nt];
    char data[DATA_MAX];
    int dl = fmt_data(data, sizeof data, k, pad, 1);
    return snprintf(out, cap, "{\"topic\":\"%s\",\"data\":\"%.*s\"}", t->a, dl, data);
}

static void ring_push(pconn_t *c, long long v) {
    c->ring[(c->rhead + c->rlen) % o_window] = v;
    c->rlen++;
    c->outstanding++;
}

static long long ring_pop(pconn_t *c) {
    if (!c->rlen) return -1;
    long long v = c->ring[c->rhead];
    c->rhead = (c->rhead + 1) % o_window;
    c->rlen--;
    c->outstanding--;
    return v;
}

static void http_request(pconn_t *c, const char *path, const char *ctype, const char *body, size_t blen) {
    char h[4096 + 512];
    int hl = snprintf(h, sizeof h,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n%s%s%s%s"
                      "Content-Length: %zu\r\n\r\n",
                      path, o_host, o_port, ctype, o_token[0] ? "Authorization: Bearer " : "", o_token,
                      o_token[0] ? "\r\n" : "", o_ids_out && o_mode == M_NCHAN ? "Accept: text/json\r\n" : "",
                      blen);
    b_add(&c->out, h, (size_t)hl);
    b_add(&c->out, body, blen);
}

/* One request of one event (every mode but hub-batch). */
static void add_event(pconn_t *c, long long k, const char *pad) {
    target_t *t = &g_t[k % g_nt];
    char data[DATA_MAX];
    if (o_mode == M_REDIS) {
        int dl = fmt_data(data, sizeof data, k, pad, 0);
        b_add(&c->out, "*10\r\n$7\r\nEVALSHA\r\n", 18);
        b_fmt_bulk(&c->out, o_sha, strlen(o_sha));
        b_add(&c->out, "$1\r\n1\r\n", 7);
        b_fmt_bulk(&c->out, t->a, t->alen);
        b_fmt_bulk(&c->out, data, (size_t)dl);
        b_add(&c->out, "$0\r\n\r\n", 6);
        b_fmt_bulk(&c->out, o_maxlen, strlen(o_maxlen));
        b_fmt_bulk(&c->out, o_maxage, strlen(o_maxage));
        b_fmt_bulk(&c->out, t->b, t->blen);
        b_fmt_bulk(&c->out, o_announce, strlen(o_announce));
    } else if (o_mode == M_NCHAN) {
        int dl = fmt_data(data, sizeof data, k, pad, 0);
        http_request(c, t->a, "application/json", data, (size_t)dl);
    } else if (o_mode == M_MERCURE) {
        int dl = fmt_data(data, sizeof data, k, pad, 0);
        g_body.len = 0;
        b_add(&g_body, "topic=", 6);
        b_add(&g_body, t->b, t->blen);
        b_add(&g_body, "&data=", 6);
        b_urlencode(&g_body, data, (size_t)dl);
        http_request(c, o_path, "application/x-www-form-urlencoded", g_body.p, g_body.len);
    } else {
        char ev[DATA_MAX + 256];
        int el = fmt_hub_event(ev, sizeof ev, k, pad);
        http_request(c, o_path, "application/json", ev, (size_t)el);
    }
    ring_push(c, k);
}

/* hub-batch: the collected events as one request. */
static void flush_batch(pconn_t *c, const char *pad) {
    if (!c->npend) return;
    g_body.len = 0;
    if (!o_ndjson) b_add(&g_body, "[", 1);
    for (int i = 0; i < c->npend; i++) {
        char ev[DATA_MAX + 256];
        int el = fmt_hub_event(ev, sizeof ev, c->pend[i], pad);
        if (i && !o_ndjson) b_add(&g_body, ",", 1);
        b_add(&g_body, ev, (size_t)el);
        if (o_ndjson) b_add(&g_body, "\n", 1);
    }
    if (!o_ndjson) b_add(&g_body, "]", 1);
    http_request(c, o_path, o_ndjson ? "application/x-ndjson" : "application/json", g_body.p, g_body.len);
    ring_push(c, c->npend);
    c->npend = 0;
}

static void note_error(const char *p, size_t n) {
    if (!g_first_err[0]) {
        if (n > sizeof g_first_err - 1) n = sizeof g_first_err - 1;
        memcpy(g_first_err, p, n);
        g_first_err[n] = 0;
        for (char *q = g_first_err; *q; q++)
            if (*q == '"' || *q == '\\' || *q < 32) *q = ' ';
    }
}

static void keep_id(long long k, const char *id, size_t n) {
    size_t il = n < sizeof g_last_id - 1 ? n : sizeof g_last_id - 1;
    memcpy(g_last_id, id, il);
    g_last_id[il] = 0;
    if (g_ids && k >= 0) {
        free(g_ids[k % g_nt]);
        g_ids[k % g_nt] = strndup(id, n);
    }
}

/* Consume complete answers from c->in; returns how many. */
static long long parse_redis(pconn_t *c) {
    long long got = 0;
    for (;;) {
        char *p = c->in.p + c->in.off;
        size_t n = c->in.len - c->in.off;
        if (n < 3) break;
        char *crlf = memmem(p, n, "\r\n", 2);
        if (!crlf) break;
        size_t hl = (size_t)(crlf - p) + 2;
        if (p[0] == '$') {
            long long bl = atoll(p + 1);
            if (bl >= 0 && n < hl + (size_t)bl + 2) break;
            long long k = ring_pop(c);
            if (bl < 0) { c->in.off += hl; }
            else {
                keep_id(k, p + hl, (size_t)bl);
                c->in.off += hl + (size_t)bl + 2;
            }
            g_acked++;
        } else {
            ring_pop(c);
            if (p[0] == '-') {
                note_error(p + 1, hl - 3);
                g_errors++;
            } else {
                g_acked++;
            }
            c->in.off += hl;
        }
        got++;
    }
    return got;
}

/* A non-negative integer after "key": in p[0..n), or -1. */
static long long json_int(const char *p, size_t n, const char *key) {
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k) return -1;
    const char *q = k + kl, *end = p + n;
    while (q < end && (*q == ' ' || *q == ':')) q++;
    long long v = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') { v = v * 10 + (*q - '0'); q++; digits++; }
    return digits ? v : -1;
}

/* The string after "key": in p[0..n) (no escapes expected in IDs); its length, or -1. */
static long long json_str(const char *p, size_t n, const char *key, const char **out) {
    size_t kl = strlen(key);
    const char *k = memmem(p, n, key, kl);
    if (!k) return -1;
    const char *q = k + kl, *end = p + n;
    while (q < end && (*q == ' ' || *q == ':')) q++;
    if (q >= end || *q != '"') return -1;
    const char *e = memchr(q + 1, '"', (size_t)(end - q - 1));
    if (!e) return -1;
    *out = q + 1;
    return e - q - 1;
}

/* The body of a chunked answer starting at p: 1 and the body in g_scratch once complete
 * (*used: bytes up to the end of the answer), 0 while incomplete, -1 when malformed. */
static int dechunk(const char *p, size_t n, size_t *used) {
    size_t i = 0;
    g_scratch.len = 0;
    for (;;) {
        const char *eol = memmem(p + i, n - i, "\r\n", 2);
        if (!eol) return 0;
        char *end;
        long long size = strtoll(p + i, &end, 16);
        if (end == p + i || size < 0) return -1;
        i = (size_t)(eol - p) + 2;
        if (size == 0) { /* trailers, then an empty line */
            for (;;) {
                const char *t = memmem(p + i, n - i, "\r\n", 2);
                if (!t) return 0;
                size_t line = (size_t)(t - (p + i));
                i += line + 2;
                if (line == 0) { *used = i; return 1; }
            }
        }
        if (n - i < (size_t)size + 2) return 0;
        b_add(&g_scratch, p + i, (size_t)size);
        i += (size_t)size + 2;
    }
}

static long long parse_http(pconn_t *c, int *closing) {
    long long got = 0;
    for (;;) {
        char *p = c->in.p + c->in.off;
        size_t n = c->in.len - c->in.off;
        char *e = memmem(p, n, "\r\n\r\n", 4);
        if (!e) break;
        size_t head = (size_t)(e - p) + 4;
        int status = 0;
        sscanf(p, "HTTP/1.%*d %d", &status);
        long long clen = 0;
        int chunked = 0, close_after = 0;
        for (char *l = memmem(p, head, "\r\n", 2); l && l < e; l = memmem(l + 2, (size_t)(e - l), "\r\n", 2)) {
            char *name = l + 2, *eol = memmem(name, (size_t)(e + 2 - name), "\r\n", 2);
            size_t ll = eol ? (size_t)(eol - name) : 0;
            if (strncasecmp(name, "content-length:", 15) == 0) clen = atoll(name + 15);
            if (strncasecmp(name, "transfer-encoding:", 18) == 0 && memmem(name, ll, "chunked", 7)) chunked = 1;
            if (strncasecmp(name, "connection:", 11) == 0 && ll >= 16 &&
                (memmem(name, ll, "close", 5) || memmem(name, ll, "Close", 5)))
                close_after = 1;
        }
        const char *body;
        size_t blen, total;
        if (chunked) {
            size_t used = 0;
            int r = dechunk(p + head, n - head, &used);
            if (r == 0) break;
            if (r < 0) { fprintf(stderr, "publisher: a malformed chunked answer\n"); exit(3); }
            body = g_scratch.p ? g_scratch.p : "";
            blen = g_scratch.len;
            total = head + used;
        } else {
            if (n < head + (size_t)clen) break;
            body = p + head;
            blen = (size_t)clen;
            total = head + (size_t)clen;
        }
        long long v = ring_pop(c); /* the event (single) or the number of events (batch) */
        long long events = o_mode == M_HUB_BATCH ? v : 1;
        g_requests++;
        if (status < 200 || status > 299) {
            char msg[200];
            int ml = snprintf(msg, sizeof msg, "HTTP %d: %.*s", status, (int)(blen > 120 ? 120 : blen), body);
            note_error(msg, (size_t)ml);
            g_errors += events;
        } else if (o_mode == M_HUB_BATCH) {
            long long published = json_int(body, blen, "\"published\""), failed = json_int(body, blen, "\"failed\"");
            if (published < 0 || failed < 0) {
                note_error("a batch answer without published/failed: ", 41);
                g_errors += events;
            } else {
                g_acked += published;
                g_errors += failed;
                if (published + failed != events) {
                    note_error("a batch answer counts other than the events sent", 48);
                    if (published + failed < events) g_errors += events - published - failed;
                }
                if (failed) {
                    const char *err;
                    long long el = json_str(body, blen, "\"error\"", &err);
                    if (el > 0) note_error(err, (size_t)el);
                    else note_error("failed events in a batch", 24);
                }
            }
        } else if (o_mode == M_MERCURE) {
            size_t il = blen; /* the body is the update's ID */
            while (il && (body[il - 1] == '\n' || body[il - 1] == '\r' || body[il - 1] == ' ')) il--;
            if (il) keep_id(v, body, il);
            g_acked++;
        } else {
            const char *id;
            long long il = json_str(body, blen, o_mode == M_NCHAN ? "\"last_message_id\"" : "\"id\"", &id);
            if (il > 0) keep_id(v, id, (size_t)il);
            g_acked++;
        }
        c->in.off += total;
        got++;
        if (close_after) { *closing = 1; break; }
    }
    return got;
}

static void compact(buf_t *b) {
    if (b->off == 0) return;
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
}

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o_port)};
    inet_pton(AF_INET, o_host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("publisher: connect"); exit(2); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int nb = 1;
    ioctl(fd, FIONBIO, &nb);
    return fd;
}

/* The events of requests still unanswered on c: errors now, the connection being gone. */
static long long abandon(pconn_t *c) {
    long long events = 0;
    while (c->rlen) {
        long long v = ring_pop(c);
        events += o_mode == M_HUB_BATCH ? v : 1;
    }
    g_errors += events;
    return events;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--mode")) {
            if (strcmp(v, "redis") == 0) o_mode = M_REDIS;
            else if (strcmp(v, "nchan") == 0) o_mode = M_NCHAN;
            else if (strcmp(v, "hub") == 0) o_mode = M_HUB;
            else if (strcmp(v, "hub-batch") == 0) o_mode = M_HUB_BATCH;
            else if (strcmp(v, "mercure") == 0) o_mode = M_MERCURE;
            else { fprintf(stderr, "publisher: --mode redis|nchan|hub|hub-batch|mercure\n"); return 2; }
        } else if (OPT("--host")) o_host = v;
        else if (OPT("--port")) o_port = atoi(v);
        else if (OPT("--targets")) o_targets = v;
        else if (OPT("--rate")) o_rate = atof(v);
        else if (OPT("--duration")) o_duration = atof(v);
        else if (OPT("--count")) o_count = atoll(v);
        else if (OPT("--start-seq")) o_start_seq = atoll(v);
        else if (OPT("--conns")) o_conns = atoi(v);
        else if (OPT("--window")) o_window = atoi(v);
        else if (OPT("--sha")) o_sha = v;
        else if (OPT("--maxlen")) o_maxlen = v;
        else if (OPT("--maxage-ms")) o_maxage = v;
        else if (OPT("--pad")) o_pad = atoi(v);
        else if (OPT("--announce")) o_announce = v;
        else if (OPT("--ack-timeout")) o_ack_timeout = atof(v);
        else if (OPT("--token")) o_token = v;
        else if (OPT("--path")) o_path = v;
        else if (OPT("--batch")) o_batch = atoi(v);
        else if (OPT("--linger-ms")) o_linger_ms = atof(v);
        else if (OPT("--ids-out")) o_ids_out = v;
        else if (strcmp(a, "--ndjson") == 0) o_ndjson = 1;
        else {
            fprintf(stderr, "usage: publisher --mode redis|nchan|hub|hub-batch|mercure --port P --targets FILE\n"
                            "  [--rate R/topic/s] [--duration S | --count N] [--sha SHA] [--conns K] [--window W]\n"
                            "  [--pad BYTES] [--token T] [--path /publish | /.well-known/mercure] [--batch N]\n"
                            "  [--linger-ms MS] [--ndjson]\n"
                            "  [--ids-out FILE] [--ack-timeout S]\n");
            return 2;
        }
#undef OPT
    }
    if (!o_path) o_path = o_mode == M_MERCURE ? "/.well-known/mercure" : "/publish";
    if (!o_targets || o_conns < 1 || o_conns > MAX_CONNS || o_window < 1 || o_pad < 0 || o_pad > 4000 ||
        o_batch < 1 || o_batch > MAX_BATCH || o_linger_ms < 0 || (o_mode == M_REDIS && strlen(o_sha) != 40) ||
        strlen(o_token) > 2048 || strlen(o_path) > 1024 || (o_ids_out && o_mode == M_HUB_BATCH)) {
        fprintf(stderr, "publisher: need --targets, 1..%d --conns, --window >= 1, --pad <= 4000, 1..%d --batch, "
                        "a 40-char --sha (redis); no --ids-out with hub-batch\n",
                MAX_CONNS, MAX_BATCH);
        return 2;
    }
    int batching = o_mode == M_HUB_BATCH;
    int is_http = o_mode != M_REDIS;
    load_targets();
    if (o_mode == M_MERCURE) {
        for (int i = 0; i < g_nt; i++) { /* the topic as the form carries it, once */
            g_scratch.len = 0;
            b_urlencode(&g_scratch, g_t[i].a, g_t[i].alen);
            g_t[i].b = strndup(g_scratch.p, g_scratch.len);
            g_t[i].blen = g_scratch.len;
        }
        g_scratch.len = 0;
    }
    if (o_ids_out) g_ids = calloc((size_t)g_nt, sizeof(char *));
    char *pad = malloc((size_t)o_pad + 1);
    memset(pad, 'x', (size_t)o_pad);
    pad[o_pad] = 0;

    pconn_t cs[MAX_CONNS];
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < o_conns; i++) {
        cs[i].fd = connect_to();
        cs[i].ring = calloc((size_t)o_window, sizeof(long long));
        if (batching) cs[i].pend = calloc((size_t)o_batch, sizeof(long long));
    }
    double total_rate = o_rate * g_nt; /* events/s over all topics; 0: unpaced */
    long long planned = o_count > 0 ? o_count * g_nt : -1;
    long long per_request = batching ? o_batch : 1;
    uint64_t t0 = now_ns(), t_last_send = t0, t_last_ack = t0;
    uint64_t deadline = o_count > 0 ? UINT64_MAX : t0 + (uint64_t)(o_duration * 1e9);
    uint64_t linger_ns = (uint64_t)(o_linger_ms * 1e6);
    long long sent = 0;
    int broken = 0;
    /* how many events in all: known up front but for an unpaced --duration (at its deadline) */
    long long end_at = planned;
    if (planned < 0 && total_rate > 0) {
        double want = o_duration * total_rate;
        long long n = (long long)want;
        if ((double)n < want) n++;
        end_at = ((n + g_nt - 1) / g_nt) * g_nt;
        if (end_at < g_nt) end_at = g_nt;
    }
    uint64_t t_all_sent = 0;
    struct pollfd pf[MAX_CONNS];
    for (;;) {
        uint64_t now = now_ns();
        long long due;
        if (end_at < 0 && now >= deadline) end_at = ((sent + g_nt - 1) / g_nt) * g_nt; /* finish the round */
        if (total_rate <= 0) due = sent + (long long)o_window * o_conns * per_request;
        else due = (long long)((double)(now - t0) / 1e9 * total_rate) + 1;
        if (end_at >= 0 && due > end_at) due = end_at;
        /* fill the windows round-robin; a topic always goes over the same connection */
        long long sent_before = sent;
        while (sent < due) {
            pconn_t *c = &cs[(sent % g_nt) % o_conns];
            if (batching) {
                if (c->npend >= o_batch) {
                    if (c->outstanding >= o_window) break;
                    flush_batch(c, pad);
                }
                if (!c->npend) c->pend_ns = now;
                c->pend[c->npend++] = sent++;
                if (c->npend >= o_batch && c->outstanding < o_window) flush_batch(c, pad);
            } else {
                if (c->outstanding >= o_window) break;
                add_event(c, sent++, pad);
            }
        }
        int all_sent = end_at >= 0 && sent >= end_at;
        if (all_sent && !t_all_sent) t_all_sent = now;
        long long outstanding = 0, pending = 0;
        for (int i = 0; i < o_conns; i++) {
            pconn_t *c = &cs[i];
            /* a batch goes once full, once its first event waited --linger-ms, or at the end */
            if (batching && c->npend && c->outstanding < o_window &&
                (c->npend >= o_batch || all_sent || now - c->pend_ns >= linger_ns))
                flush_batch(c, pad);
            outstanding += c->outstanding;
            pending += c->npend;
        }
        if (sent > sent_before) t_last_send = now;
        if (all_sent && outstanding == 0 && pending == 0) break;
        if (all_sent && (now - t_all_sent) / 1e9 > o_ack_timeout) {
            note_error("timed out waiting for answers", 29);
            break;
        }
        if (outstanding && now > t_last_ack && (now - t_last_ack) / 1e9 > o_ack_timeout) {
            note_error("no answer for --ack-timeout seconds", 35);
            break;
        }
        for (int i = 0; i < o_conns; i++) {
            pf[i].fd = cs[i].fd;
            pf[i].events = POLLIN | (cs[i].out.len > cs[i].out.off ? POLLOUT : 0);
            pf[i].revents = 0;
        }
        int timeout = 1;
        if (total_rate > 0 && sent < due) timeout = 0;
        poll(pf, (nfds_t)o_conns, timeout);
        for (int i = 0; i < o_conns && !broken; i++) {
            pconn_t *c = &cs[i];
            if (c->out.len > c->out.off) {
                ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
                if (w > 0) c->out.off += (size_t)w;
                else if (w < 0 && errno != EAGAIN) {
                    perror("publisher: write");
                    note_error("the connection failed on write", 30);
                    abandon(c);
                    broken = 1;
                    break;
                }
                if (c->out.off == c->out.len) c->out.off = c->out.len = 0;
            }
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                b_reserve(&c->in, 65536);
                ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
                int closing = 0;
                if (r > 0) {
                    c->in.len += (size_t)r;
                    long long got = is_http ? parse_http(c, &closing) : parse_redis(c);
                    if (got) t_last_ack = now_ns();
                    compact(&c->in);
                }
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR) || closing) {
                    long long lost = abandon(c) + c->npend;
                    g_errors += c->npend;
                    c->npend = 0;
                    char msg[96];
                    int ml = snprintf(msg, sizeof msg, "the server closed the connection, %lld events unanswered",
                                      lost);
                    note_error(msg, (size_t)ml);
                    broken = 1;
                }
            }
        }
        if (broken) break;
    }
    double send_s = (t_last_send - t0) / 1e9, ack_s = (t_last_ack - t0) / 1e9;
    long long final_seq = sent / g_nt + o_start_seq - 1;
    if (o_ids_out) {
        FILE *f = fopen(o_ids_out, "w");
        if (!f) { perror(o_ids_out); return 2; }
        for (int i = 0; i < g_nt; i++) fprintf(f, "%s\n", g_ids[i] ? g_ids[i] : "");
        fclose(f);
    }
    printf("{\"topics\":%d,\"sent\":%lld,\"acked\":%lld,\"errors\":%lld,\"requests\":%lld,\"final_seq\":%lld,"
           "\"offered_per_s\":%.1f,\"achieved_per_s\":%.1f,\"requests_per_s\":%.1f,\"send_s\":%.3f,\"ack_s\":%.3f,"
           "\"start_ns\":%llu,\"last_id\":\"%s\",\"first_error\":\"%s\"}\n",
           g_nt, sent, g_acked, g_errors, is_http ? g_requests : g_acked + g_errors, final_seq, total_rate,
           ack_s > 0 ? g_acked / ack_s : 0.0, ack_s > 0 && is_http ? g_requests / ack_s : 0.0, send_s, ack_s,
           (unsigned long long)t0, g_last_id, g_first_err);
    fflush(stdout);
    if (broken) {
        fprintf(stderr, "publisher: %s\n", g_first_err);
        return 3;
    }
    return 0;
}
