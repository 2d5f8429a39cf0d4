/* Constrained sampler for digit generation: mask to the allowed ids, temperature, top-p, seeded RNG.
 * Its Python twin is in scripts/golden.py (sample_ref), which writes the golden draws. */
#include <math.h>
#include <stdlib.h>

#include "alignts_kernels.h"

uint64_t at_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double at_uniform(uint64_t *state) {
    return (double)(at_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0); /* 2^-53 */
}

typedef struct {
    double p;
    double pos; /* position in allowed (exact in a double) */
} cand;

/* probability descending, ties by position in allowed (as a stable argsort of -p) */
static int cmp_cand(const void *a, const void *b) {
    const cand *x = (const cand *)a, *y = (const cand *)b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

int at_sample(const float *logits, size_t vocab, const int64_t *allowed, size_t n_allowed, double temperature,
              double top_p, uint64_t *state, double *work, int64_t *out_id) {
    size_t i, keep;
    cand *c = (cand *)work;
    double zmax = -INFINITY, total = 0.0, cum, u;
    if (!logits || !allowed || !out_id || n_allowed == 0 || !(temperature >= 0.0) || !(top_p > 0.0))
        return AT_ERR_ARG;
    for (i = 0; i < n_allowed; i++)
        if (allowed[i] < 0 || allowed[i] >= (int64_t)vocab || logits[allowed[i]] != logits[allowed[i]])
            return AT_ERR_ARG;
    if (temperature == 0.0) { /* the first maximum in allowed order, as numpy's argmax */
        size_t best = 0;
        for (i = 1; i < n_allowed; i++)
            if (logits[allowed[i]] > logits[allowed[best]]) best = i;
        *out_id = allowed[best];
        return AT_OK;
    }
    if (!state || !work) return AT_ERR_ARG;
    for (i = 0; i < n_allowed; i++) {
        double z = (double)logits[allowed[i]] / temperature;
        c[i].p = z;
        c[i].pos = (double)i;
        if (z > zmax) zmax = z;
    }
    for (i = 0; i < n_allowed; i++) {
        c[i].p = exp(c[i].p - zmax);
        total += c[i].p;
    }
    for (i = 0; i < n_allowed; i++) c[i].p /= total;
    qsort(c, n_allowed, sizeof(cand), cmp_cand);
    cum = 0.0;
    keep = n_allowed;
    for (i = 0; i < n_allowed; i++) {
        cum += c[i].p;
        if (cum >= top_p) {
            keep = i + 1;
            break;
        }
    }
    total = 0.0;
    for (i = 0; i < keep; i++) total += c[i].p;
    u = at_uniform(state) * total;
    cum = 0.0;
    for (i = 0; i < keep; i++) {
        cum += c[i].p;
        if (u < cum) {
            *out_id = allowed[(size_t)c[i].pos];
            return AT_OK;
        }
    }
    *out_id = allowed[(size_t)c[keep - 1].pos];
    return AT_OK;
}
