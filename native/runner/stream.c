/* alignts-run --stream: read points from stdin as they arrive, feed them to a libalignts stream (the last L of
 * each channel, alignts_stream_update) and every k points write one JSON line with the forecast of the window
 * (alignts_stream_forecast), as `alignts stream` (alignts/cli/stream.py) does with its window engine (recompute:
 * the batch forecast of the window). Memory is fixed once the channel count is known: the stream, one input
 * buffer of STREAM_LINE_MAX bytes, the forecast's outputs. */
#define _POSIX_C_SOURCE 200809L
#include "stream.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <fcntl.h>

#include "json.h"
#include "rt_util.h"

#define STREAM_LINE_MAX 65536 /* longer lines are reported and skipped */
#define STREAM_MAX_CHANNELS 4096

/* ---------------------------------------------------------------------------------------------- line reader */

/* Lines from a file descriptor through one fixed buffer; can say whether more input is waiting (poll). */
typedef struct {
    int fd, eof;
    size_t beg, end;
    char buf[STREAM_LINE_MAX];
} reader;

/* The next line (NUL-terminated, no newline) in *line: 1; 0 at the end of the input; -1 on a read error.
 * *too_long = 1 for a line longer than the buffer (its text is dropped). */
static int next_line(reader *r, char **line, int *too_long) {
    *too_long = 0;
    for (;;) {
        char *nl = r->end > r->beg ? (char *)memchr(r->buf + r->beg, '\n', r->end - r->beg) : NULL;
        ssize_t got;
        if (nl) {
            *nl = '\0';
            *line = r->buf + r->beg;
            r->beg = (size_t)(nl - r->buf) + 1;
            if (*too_long) *line = r->buf + r->beg - 1; /* an empty string: the text was dropped */
            return 1;
        }
        if (r->eof) {
            if (r->beg < r->end && !*too_long && r->end == sizeof r->buf) { /* no room for its NUL */
                *too_long = 1;
                r->beg = r->end = 0;
            }
            if (r->beg < r->end && !*too_long) { /* the last line has no newline */
                r->buf[r->end] = '\0';
                *line = r->buf + r->beg;
                r->beg = r->end = 0;
                return 1;
            }
            if (*too_long) {
                r->beg = r->end = 0;
                r->buf[0] = '\0';
                *line = r->buf;
                return 1;
            }
            return 0;
        }
        if (r->beg > 0) { /* keep the partial line at the front */
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->end -= r->beg;
            r->beg = 0;
        }
        if (r->end == sizeof r->buf) { /* a line longer than the buffer: drop what came so far */
            *too_long = 1;
            r->end = 0;
        }
        got = read(r->fd, r->buf + r->end, sizeof r->buf - r->end);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
}

/* More input is waiting: a whole line in the buffer, or the descriptor has data (or its end) now. */
static int input_ready(const reader *r) {
    struct pollfd pf;
    if (r->eof || (r->end > r->beg && memchr(r->buf + r->beg, '\n', r->end - r->beg))) return 1;
    pf.fd = r->fd;
    pf.events = POLLIN;
    pf.revents = 0;
    return poll(&pf, 1, 0) > 0;
}

/* Whole lines already waiting in the buffer. */
static size_t backlog(const reader *r) {
    size_t n = 0, i;
    for (i = r->beg; i < r->end; i++) n += r->buf[i] == '\n';
    return n;
}

/* ---------------------------------------------------------------------------------------------- line parser */

typedef struct {
    size_t C;       /* channels per point; 0 until the first good line (Injective) */
    int header;     /* a CSV header was read */
    long ts_col;    /* its timestamp column, or -1 */
    size_t n_header;
    int have_last_ts;
    double last_ts;
    char msg[400];
} line_parser;

static int bad(line_parser *lp, const char *fmt, ...) RT_PRINTF(2, 3);
static int bad(line_parser *lp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lp->msg, sizeof lp->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static char *trim(char *s) {
    char *e;
    while (isspace((unsigned char)*s)) s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* A whole field as a number (Python float(): surrounding spaces already trimmed). */
static int parse_number(const char *s, double *v) {
    char *end;
    if (!*s) return -1;
    errno = 0;
    *v = strtod(s, &end);
    return *end ? -1 : 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD[(T| )HH:MM[:SS[.frac]]][Z]" -> seconds since the epoch (UTC, as numpy's datetime64). */
static int parse_iso(const char *s, double *out) {
    int y, mo, d, hh = 0, mi = 0, n = 0;
    double sec = 0.0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10 || mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    s += n;
    if (*s == 'T' || *s == ' ') {
        int k = 0;
        if (sscanf(s + 1, "%2d:%2d%n", &hh, &mi, &k) != 2 || k != 5 || hh > 23 || mi > 59) return -1;
        s += 1 + k;
        if (*s == ':') {
            char *end;
            if (!isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[2])) return -1;
            sec = strtod(s + 1, &end);
            if (!(sec >= 0 && sec < 60)) return -1;
            s = end;
        }
    }
    if (*s == 'Z') s++;
    if (*s) return -1;
    *out = (double)(days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60) + sec;
    return 0;
}

static int parse_timestamp_text(line_parser *lp, const char *s, double *ts) {
    if (parse_iso(s, ts) == 0) return 0;
    return bad(lp, "timestamp '%.40s': expected seconds or an ISO date YYYY-MM-DD[ HH:MM[:SS[.f]]] (UTC)", s);
}

/* Python's _word: a header field (not a number, not a missing-value mark, not an ISO date). */
static int is_word(const char *f) {
    double v;
    int i;
    if (!*f || !strcasecmp(f, "nan") || !strcasecmp(f, "na")) return 0;
    if (parse_number(f, &v) == 0) return 0;
    for (i = 0; i < 4 && f[i]; i++)
        if (!isdigit((unsigned char)f[i])) return 1;
    return 0;
}

static int check_values(line_parser *lp, const double *x, size_t n) {
    size_t i;
    if (lp->C == 0) lp->C = n;
    if (n != lp->C) return bad(lp, "expected %zu values (channels); got %zu", lp->C, n);
    for (i = 0; i < n; i++)
        if (isinf(x[i])) return bad(lp, "a value is inf (channel %zu); expected finite numbers (empty or null "
                                    "for a missing one)", i);
    return 0;
}

/* One line -> x [C] and its timestamp: 0 a point, 1 nothing (blank, comment, CSV header), -1 bad (lp->msg). */
static int parse_line(line_parser *lp, char *line, double *x, int *has_ts, double *ts) {
    char *s = trim(line);
    size_t n = 0;
    *has_ts = 0;
    if (!*s || *s == '#') return 1;
    if (*s == '{' || *s == '[') {
        json_value *v = NULL;
        const json_value *vals, *t = NULL;
        char err[160];
        int rc = 0;
        if (json_parse(s, strlen(s), &v, err, sizeof err))
            return bad(lp, "not valid JSON (%s)", err);
        vals = v;
        if (v->type == JSON_OBJECT) {
            if (!(vals = json_get(v, "values"))) {
                json_free(v);
                return bad(lp, "a JSON object needs 'values'");
            }
            t = json_get(v, "timestamp");
        }
        if (vals->type == JSON_ARRAY) {
            size_t i;
            if (vals->n > STREAM_MAX_CHANNELS) rc = bad(lp, "more than %d values", STREAM_MAX_CHANNELS);
            for (i = 0; !rc && i < vals->n; i++) {
                if (vals->items[i].type == JSON_NUMBER) x[n++] = vals->items[i].number;
                else if (vals->items[i].type == JSON_NULL) x[n++] = NAN;
                else rc = bad(lp, "values must be numbers or null; item %zu is %s", i,
                              json_type_name(vals->items[i].type));
            }
        } else if (vals->type == JSON_NUMBER || vals->type == JSON_NULL) {
            x[n++] = vals->type == JSON_NUMBER ? vals->number : NAN;
        } else {
            rc = bad(lp, "values must be numbers or null; got %s", json_type_name(vals->type));
        }
        if (!rc) rc = check_values(lp, x, n);
        if (!rc && t && t->type != JSON_NULL) {
            if (t->type == JSON_NUMBER) *ts = t->number;
            else if (t->type == JSON_STRING) rc = parse_timestamp_text(lp, t->string, ts);
            else rc = bad(lp, "timestamp: expected seconds or an ISO date string; got %s",
                          json_type_name(t->type));
            *has_ts = !rc;
        }
        json_free(v);
        return rc;
    }
    {
        char *fields[STREAM_MAX_CHANNELS + 2], *p = s, *ts_text = NULL;
        size_t nf = 0, i;
        int any_word = 0;
        for (;;) {
            char *comma = strchr(p, ',');
            if (nf == STREAM_MAX_CHANNELS + 1) return bad(lp, "more than %d fields", STREAM_MAX_CHANNELS);
            if (comma) *comma = '\0';
            fields[nf] = trim(p);
            any_word |= is_word(fields[nf]);
            nf++;
            if (!comma) break;
            p = comma + 1;
        }
        if (!lp->header && any_word) { /* the header: which column holds the timestamps */
            static const char *names[] = {"timestamp", "date", "time", "ts"};
            size_t k;
            lp->header = 1;
            lp->n_header = nf;
            lp->ts_col = -1;
            for (k = 0; k < 4 && lp->ts_col < 0; k++)
                for (i = 0; i < nf && lp->ts_col < 0; i++) {
                    size_t j;
                    char low[16];
                    for (j = 0; j + 1 < sizeof low && fields[i][j]; j++) low[j] = (char)tolower((unsigned char)fields[i][j]);
                    low[j] = '\0';
                    if (!fields[i][j] && !strcmp(low, names[k])) lp->ts_col = (long)i;
                }
            return 1;
        }
        if (lp->header && lp->ts_col >= 0) {
            if (nf <= (size_t)lp->ts_col)
                return bad(lp, "expected %zu fields (as the header); got %zu", lp->n_header, nf);
            ts_text = fields[lp->ts_col];
            memmove(fields + lp->ts_col, fields + lp->ts_col + 1, (nf - (size_t)lp->ts_col - 1) * sizeof(char *));
            nf--;
        }
        for (i = 0; i < nf; i++) {
            const char *f = fields[i];
            if (!*f || !strcmp(f, "nan") || !strcmp(f, "NaN") || !strcmp(f, "NA")) x[n++] = NAN;
            else if (parse_number(f, &x[n]) == 0) n++;
            else return bad(lp, "field %zu is '%.40s'; fields must be numbers (empty = missing)", i + 1, f);
        }
        if (check_values(lp, x, n)) return -1;
        if (ts_text) {
            if (parse_number(ts_text, ts) && parse_timestamp_text(lp, ts_text, ts)) return -1;
            *has_ts = 1;
        }
        return 0;
    }
}

/* The timestamp rules of `alignts stream`: strictly increasing once there are timestamps. */
static int check_timestamp(line_parser *lp, int has_ts, double ts) {
    char buf[40];
    if (has_ts) {
        if (!isfinite(ts)) return bad(lp, "the timestamp is not finite");
        if (lp->have_last_ts && !(ts > lp->last_ts)) {
            rt_format_double(ts, buf, sizeof buf);
            return bad(lp, "timestamp %s is not after the previous one", buf);
        }
    } else if (lp->have_last_ts) {
        return bad(lp, "no timestamp, but the points before had one");
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- the stream */

typedef struct {
    alignts *h;
    const stream_options *o;
    int injective;
    size_t C, L, H, n_q;
    const double *levels;
    alignts_stream *st; /* the window */
    double *out, *q;    /* one forecast */
    /* counters */
    long long n_points, n_forecasts, n_bad, n_missing, n_coalesced, n_failed;
} stream;

static int stream_alloc(stream *s, alignts_plan_params *p) {
    alignts_plan_info info;
    size_t C = s->C, H;
    if (s->injective && (long)C > p->max_series) { /* one call forecasts every channel */
        p->max_series = (long)C;
        if (alignts_plan(s->h, p, &info) != ALIGNTS_OK) return rt_fail("%s", alignts_last_error(s->h));
    }
    if (alignts_info(s->h, &info) != ALIGNTS_OK) return rt_fail("%s", alignts_last_error(s->h));
    s->L = (size_t)info.context;
    s->H = H = (size_t)info.horizon;
    if (alignts_stream_open(s->h, C, &s->st) != ALIGNTS_OK) return rt_fail("%s", alignts_last_error(s->h));
    if (!(s->out = (double *)rt_malloc(C * H * sizeof(double))) ||
        !(s->q = (double *)rt_malloc((C * H * s->n_q + 1) * sizeof(double))))
        return -1;
    return 0;
}

static void stream_free(stream *s) {
    alignts_stream_close(s->st);
    free(s->out);
    free(s->q);
}

static void print_rows(const double *v, size_t C, size_t H, size_t stride, size_t off) {
    size_t c, k;
    char buf[40];
    fputc('[', stdout);
    for (c = 0; c < C; c++) {
        fputs(c ? ", [" : "[", stdout);
        for (k = 0; k < H; k++) {
            double y = v[(c * H + k) * stride + off];
            if (isfinite(y)) snprintf(buf, sizeof buf, "%.6g", y); /* Python's float(f"{v:.6g}") */
            else strcpy(buf, "null");
            fputs(k ? ", " : "", stdout);
            fputs(buf, stdout);
        }
        fputc(']', stdout);
    }
    fputc(']', stdout);
}

/* Forecast from the window ending at point seen-1 and write its JSON line. 0, or -1 when stdout fails (a
 * forecast that cannot be made is reported on stderr and counted). */
static int emit(stream *s, const reader *rd, long long line_no, int has_ts, double ts, long long lag, long long skipped) {
    const size_t C = s->C, H = s->H;
    const double t0 = rt_now_ms();
    const long long t = (long long)alignts_stream_count(s->st) - 1;
    size_t i;
    char buf[40];
    if (alignts_stream_forecast(s->st, s->out, s->levels, s->n_q, s->n_q ? s->q : NULL) != ALIGNTS_OK) {
        fprintf(stderr, "alignts-run: line %lld: forecast at t=%lld skipped: %s\n", line_no, t,
                alignts_stream_last_error(s->st));
        s->n_failed++;
        return 0;
    }
    printf("{\"t\": %lld, \"timestamp\": ", t);
    if (has_ts && ts == floor(ts) && fabs(ts) < 1e15) { /* Python's repr of a whole float: 1704067200.0 */
        printf("%.1f", ts);
    } else if (has_ts) {
        rt_format_double(ts, buf, sizeof buf);
        fputs(buf, stdout);
    } else {
        fputs("null", stdout);
    }
    printf(", \"horizon\": %zu, ", H);
    if (!s->injective) { /* a point forecaster: mean = median; Injective's sample mean is not in the C API */
        fputs("\"mean\": ", stdout);
        print_rows(s->out, C, H, 1, 0);
        fputs(", ", stdout);
    }
    fputs("\"median\": ", stdout);
    print_rows(s->out, C, H, 1, 0);
    if (s->n_q) {
        fputs(", \"quantiles\": {", stdout);
        for (i = 0; i < s->n_q; i++) {
            rt_format_double(s->levels[i], buf, sizeof buf);
            printf("%s\"%s\": ", i ? ", " : "", buf);
            print_rows(s->q, C, H, s->n_q, i);
        }
        fputc('}', stdout);
    }
    printf(", \"lag\": %lld, \"skipped\": %lld, \"backlog\": %zu, \"drift\": [], \"reanchored\": false, "
           "\"latency_ms\": %.3f, \"line\": %lld}\n", lag, skipped, backlog(rd), rt_now_ms() - t0, line_no);
    s->n_forecasts++;
    if (fflush(stdout) != 0) return rt_fail("cannot write the forecast to stdout: %s", strerror(errno));
    return 0;
}

/* 1 when a manifest records a conformal calibration (config.conformal), else 0. */
static int has_conformal(const char *bundle_dir) {
    char *path = rt_join(bundle_dir, "manifest.json"), *text = NULL, err[8];
    size_t len;
    json_value *m = NULL;
    const json_value *cf;
    int yes = 0;
    if (path && rt_read_file(path, &text, &len) == 0 && json_parse(text, len, &m, err, sizeof err) == 0) {
        cf = json_get(json_get(m, "config"), "conformal");
        yes = cf && cf->type != JSON_NULL && !(cf->type == JSON_BOOL && !cf->boolean) &&
              !(cf->type == JSON_OBJECT && cf->n == 0);
    }
    json_free(m);
    free(text);
    free(path);
    rt_clear_error();
    return yes;
}

/* Read the lines of rd: ingest each good point, forecast when due (forecasts = 0: only ingest, --context-from). */
static int pump(stream *s, line_parser *lp, reader *rd, const char *source, int forecasts, alignts_plan_params *p) {
    const stream_options *o = s->o;
    double *x = (double *)rt_malloc(STREAM_MAX_CHANNELS * sizeof(double)), ts = 0.0, point_ts = 0.0;
    long long line_no = 0, pending = 0, first_due = 0, due_line = 0, seen = 0;
    int rc = -1, point_has_ts = 0;
    if (!x) return -1;
    for (;;) {
        char *line;
        int too_long, has_ts, got = next_line(rd, &line, &too_long), st;
        if (got < 0) {
            rt_fail("cannot read %s: %s", source, strerror(errno));
            goto done;
        }
        if (got == 0) break;
        line_no++;
        if (too_long) {
            st = -1;
            snprintf(lp->msg, sizeof lp->msg, "longer than %d bytes", STREAM_LINE_MAX - 1);
        } else {
            st = parse_line(lp, line, x, &has_ts, &ts);
            if (st == 0) st = check_timestamp(lp, has_ts, ts);
        }
        if (st < 0) {
            s->n_bad++;
            fprintf(stderr, "alignts-run: %s line %lld: skipped: %s\n", source, line_no, lp->msg);
            continue;
        }
        if (st == 1) continue;
        if (!s->st) {
            s->C = lp->C;
            if (stream_alloc(s, p)) goto done;
        }
        if (has_ts) {
            lp->have_last_ts = 1;
            lp->last_ts = ts;
        }
        point_has_ts = has_ts;
        point_ts = ts;
        {
            size_t c;
            for (c = 0; c < s->C; c++) s->n_missing += x[c] != x[c];
        }
        if (alignts_stream_update(s->st, x, 1) != ALIGNTS_OK) { /* parse_line refused inf already */
            rt_fail("%s", alignts_stream_last_error(s->st));
            goto done;
        }
        s->n_points++;
        seen = alignts_stream_count(s->st);
        if (!forecasts) continue;
        if (seen % o->every == 0) {
            if (!pending) first_due = seen - 1;
            pending++;
        }
        due_line = line_no;
        if (pending && (o->policy_every || !input_ready(rd))) {
            s->n_coalesced += pending - 1;
            if (emit(s, rd, due_line, point_has_ts, point_ts, seen - 1 - first_due, pending - 1)) goto done;
            pending = 0;
        }
    }
    if (pending) {
        s->n_coalesced += pending - 1;
        if (emit(s, rd, due_line, point_has_ts, point_ts, alignts_stream_count(s->st) - 1 - first_due, pending - 1))
            goto done;
    }
    rc = 0;
done:
    free(x);
    return rc;
}

int stream_run(alignts *h, alignts_plan_params *p, const stream_options *o) {
    static const double default_levels[] = {0.1, 0.5, 0.9};
    alignts_plan_info info;
    line_parser lp;
    stream s;
    reader *rd = NULL;
    int rc = -1;
    memset(&s, 0, sizeof s);
    memset(&lp, 0, sizeof lp);
    lp.ts_col = -1;
    if (o->every < 1) return rt_fail("--every %ld: expected >= 1.", o->every);
    if (alignts_plan(h, p, &info) != ALIGNTS_OK) return rt_fail("%s", alignts_last_error(h));
    s.h = h;
    s.o = o;
    s.injective = !strcmp(info.paradigm, "injective");
    if (o->quantiles_given) {
        s.levels = o->levels;
        s.n_q = o->n_q;
    } else if (s.injective || has_conformal(o->bundle_dir)) {
        s.levels = default_levels;
        s.n_q = 3;
    }
    lp.C = (size_t)info.n_channels; /* Injective: 0, the first good line says */
    if (lp.C) {
        s.C = lp.C;
        if (stream_alloc(&s, p)) goto done;
    }
    if (!(rd = (reader *)rt_malloc(sizeof *rd))) goto done;
    if (o->context_from) {
        rd->fd = open(o->context_from, O_RDONLY);
        rd->eof = 0;
        rd->beg = rd->end = 0;
        if (rd->fd < 0) {
            rt_fail("cannot open --context-from %s: %s. Fix: pass a readable file of points (CSV or JSON lines).",
                    o->context_from, strerror(errno));
            goto done;
        }
        rc = pump(&s, &lp, rd, o->context_from, 0, p);
        close(rd->fd);
        if (rc) goto done;
        rc = -1;
    }
    rd->fd = 0;
    rd->eof = 0;
    rd->beg = rd->end = 0;
    if (pump(&s, &lp, rd, "stdin", 1, p)) goto done;
    rc = 0;
done:
    fprintf(stderr, "alignts-run: %lld points, %lld forecasts, %lld bad lines skipped, %lld missing values, %lld due "
            "forecasts coalesced, %lld forecasts failed; peak RSS %ld KiB\n", s.n_points, s.n_forecasts, s.n_bad,
            s.n_missing, s.n_coalesced, s.n_failed, rt_peak_rss_kib());
    free(rd);
    stream_free(&s);
    return rc;
}
