/*
 * publisher: publishes {"seq":<n>,"t":<ns since the epoch>} events at a fixed rate, pipelined.
 *
 *   --mode redis  EVALSHA of the hub's publish script (SHA given, loaded beforehand); the
 *                 targets file has one "<stream key> <channel key>" line per topic;
 *                 --announce SPUBLISH for a Redis Cluster node (default PUBLISH).
 *   --mode nchan  HTTP/1.1 POST to Nchan's publisher location; one "<path>" line per topic.
 *
 * Events go round-robin over the topics: event k goes to topic k % T with seq k / T + start,
 * so every topic's events are numbered 1, 2, 3... The schedule is --rate events/s per topic
 * for --duration seconds (or --count events per topic, as fast as possible when --rate 0).
 * At the deadline it stops at the end of the current round, so every topic ends on the same
 * seq, waits for the outstanding answers and prints one JSON object: offered vs achieved.
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

typedef struct {
    char *p;
    size_t len, cap, off;
} buf_t;

typedef struct {
    int fd;
    buf_t out, in;
    long long outstanding;
} pconn_t;

typedef struct {
    char *a, *b; /* redis: stream, channel; nchan: path */
    size_t alen, blen;
} target_t;

static int o_redis = 1;
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

static target_t *g_t;
static int g_nt;
static long long g_acked, g_errors;
static char g_first_err[256];
static char g_last_id[128];

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
        char *sp = strchr(line, ' ');
        if (o_redis && !sp) { fprintf(stderr, "publisher: target line needs '<stream> <channel>': %s\n", line); exit(2); }
        if (sp) *sp = 0;
        t->a = strdup(line);
        t->alen = strlen(t->a);
        t->b = sp ? strdup(sp + 1) : NULL;
        t->blen = sp ? strlen(t->b) : 0;
    }
    fclose(f);
    if (!g_nt) { fprintf(stderr, "publisher: no targets in %s\n", o_targets); exit(2); }
}

static void add_event(pconn_t *c, long long k, char *pad) {
    target_t *t = &g_t[k % g_nt];
    long long seq = k / g_nt + o_start_seq;
    char data[256 + 4096];
    int dl = snprintf(data, sizeof data, "{\"seq\":%lld,\"t\":%llu%s%s%s}", seq, (unsigned long long)now_ns(),
                      o_pad ? ",\"pad\":\"" : "", o_pad ? pad : "", o_pad ? "\"" : "");
    if (o_redis) {
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
    } else {
        char h[4096 + 256];
        int hl = snprintf(h, sizeof h,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n",
                          t->a, o_host, o_port, dl);
        b_add(&c->out, h, (size_t)hl);
        b_add(&c->out, data, (size_t)dl);
    }
    c->outstanding++;
}

static void note_error(const char *p, size_t n) {
    g_errors++;
    if (!g_first_err[0]) {
        if (n > sizeof g_first_err - 1) n = sizeof g_first_err - 1;
        memcpy(g_first_err, p, n);
        g_first_err[n] = 0;
        for (char *q = g_first_err; *q; q++)
            if (*q == '"' || *q == '\\' || *q < 32) *q = ' ';
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
            if (bl < 0) { c->in.off += hl; got++; continue; }
            if (n < hl + (size_t)bl + 2) break;
            size_t il = (size_t)bl < sizeof g_last_id - 1 ? (size_t)bl : sizeof g_last_id - 1;
            memcpy(g_last_id, p + hl, il);
            g_last_id[il] = 0;
            c->in.off += hl + (size_t)bl + 2;
        } else {
            if (p[0] == '-') note_error(p + 1, hl - 3);
            c->in.off += hl;
        }
        got++;
    }
    return got;
}

static long long parse_http(pconn_t *c) {
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
        int chunked = 0;
        for (char *l = memmem(p, head, "\r\n", 2); l && l < e; l = memmem(l + 2, (size_t)(e - l), "\r\n", 2)) {
            if (strncasecmp(l + 2, "content-length:", 15) == 0) clen = atoll(l + 17);
            if (strncasecmp(l + 2, "transfer-encoding:", 18) == 0) chunked = 1;
        }
        if (chunked) { /* nchan answers with Content-Length; anything else is a failure here */
            note_error("chunked publisher answer", 24);
            exit(3);
        }
        if (n < head + (size_t)clen) break;
        if (status < 200 || status > 299) note_error(p, head > 40 ? 40 : head);
        c->in.off += head + (size_t)clen;
        got++;
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

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--mode")) o_redis = strcmp(v, "redis") == 0;
        else if (OPT("--host")) o_host = v;
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
        else {
            fprintf(stderr, "usage: publisher --mode redis|nchan --port P --targets FILE [--rate R/topic/s]\n"
                            "  [--duration S | --count N] [--sha SHA] [--conns K] [--window W] [--pad BYTES]\n");
            return 2;
        }
#undef OPT
    }
    if (!o_targets || o_conns < 1 || o_conns > MAX_CONNS || o_window < 1 || o_pad < 0 || o_pad > 4000 ||
        (o_redis && strlen(o_sha) != 40)) {
        fprintf(stderr, "publisher: need --targets, 1..%d --conns, --window >= 1, --pad <= 4000, a 40-char --sha\n",
                MAX_CONNS);
        return 2;
    }
    load_targets();
    char *pad = malloc((size_t)o_pad + 1);
    memset(pad, 'x', (size_t)o_pad);
    pad[o_pad] = 0;

    pconn_t cs[MAX_CONNS];
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < o_conns; i++) {
        cs[i].fd = connect_to();
    }
    double total_rate = o_rate * g_nt; /* events/s over all topics; 0: unpaced */
    long long planned = o_count > 0 ? o_count * g_nt : -1;
    uint64_t t0 = now_ns(), t_last_send = t0, t_last_ack = t0;
    uint64_t deadline = o_count > 0 ? UINT64_MAX : t0 + (uint64_t)(o_duration * 1e9);
    long long sent = 0;
    int stopping = 0;
    struct pollfd pf[MAX_CONNS];
    for (;;) {
        uint64_t now = now_ns();
        long long due;
        if (!stopping && now >= deadline) stopping = 1;
        if (planned >= 0 && sent >= planned) stopping = 1;
        if (stopping) due = ((sent + g_nt - 1) / g_nt) * g_nt; /* finish the round */
        else if (total_rate <= 0) due = planned >= 0 ? planned : sent + (long long)o_window * o_conns;
        else due = (long long)((double)(now - t0) / 1e9 * total_rate) + 1;
        if (planned >= 0 && due > planned) due = planned;
        /* fill the windows round-robin */
        long long sent_before = sent;
        /* a topic always goes over the same connection, so its events stay in order */
        while (sent < due) {
            pconn_t *c = &cs[(sent % g_nt) % o_conns];
            if (c->outstanding >= o_window) break;
            add_event(c, sent++, pad);
        }
        if (sent > sent_before) t_last_send = now;
        long long outstanding = 0;
        for (int i = 0; i < o_conns; i++) outstanding += cs[i].outstanding;
        if (stopping && sent >= due && outstanding == 0) break;
        if (stopping && (now - deadline) / 1e9 > o_ack_timeout && deadline != UINT64_MAX) {
            note_error("timed out waiting for answers", 29);
            break;
        }
        for (int i = 0; i < o_conns; i++) {
            pf[i].fd = cs[i].fd;
            pf[i].events = POLLIN | (cs[i].out.len > cs[i].out.off ? POLLOUT : 0);
            pf[i].revents = 0;
        }
        int timeout = 1;
        if (!stopping && total_rate > 0 && sent < due) timeout = 0;
        poll(pf, (nfds_t)o_conns, timeout);
        for (int i = 0; i < o_conns; i++) {
            pconn_t *c = &cs[i];
            if (c->out.len > c->out.off) {
                ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
                if (w > 0) c->out.off += (size_t)w;
                else if (w < 0 && errno != EAGAIN) { perror("publisher: write"); exit(3); }
                if (c->out.off == c->out.len) c->out.off = c->out.len = 0;
            }
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                b_reserve(&c->in, 65536);
                ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
                if (r == 0) { fprintf(stderr, "publisher: server closed the connection\n"); exit(3); }
                if (r > 0) {
                    c->in.len += (size_t)r;
                    long long got = o_redis ? parse_redis(c) : parse_http(c);
                    c->outstanding -= got;
                    g_acked += got;
                    if (got) t_last_ack = now_ns();
                    compact(&c->in);
                }
            }
        }
    }
    double send_s = (t_last_send - t0) / 1e9, ack_s = (t_last_ack - t0) / 1e9;
    long long final_seq = sent / g_nt + o_start_seq - 1;
    printf("{\"topics\":%d,\"sent\":%lld,\"acked\":%lld,\"errors\":%lld,\"final_seq\":%lld,"
           "\"offered_per_s\":%.1f,\"achieved_per_s\":%.1f,\"send_s\":%.3f,\"ack_s\":%.3f,"
           "\"start_ns\":%llu,\"last_id\":\"%s\",\"first_error\":\"%s\"}\n",
           g_nt, sent, g_acked, g_errors, final_seq, total_rate, ack_s > 0 ? g_acked / ack_s : 0.0, send_s,
           ack_s, (unsigned long long)t0, g_last_id, g_first_err);
    return 0;
}
