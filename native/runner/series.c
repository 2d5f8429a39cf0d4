#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt_util.h"
#include "runner.h"

int series_check_float32(const double *raw, const double *x, size_t L, const char *what) {
    double mag = 0.0, raw_mag = 0.0, raw_lo = INFINITY, raw_hi = -INFINITY;
    float f_lo = INFINITY, f_hi = -INFINITY;
    size_t i;
    for (i = 0; i < L; i++) {
        float f = (float)x[i];
        if (!isfinite(x[i]) || fabs(x[i]) > FLT_MAX) {
            char as_read[64] = "";
            if (raw != x) snprintf(as_read, sizeof as_read, " (%.17g before the training scaler)", raw[i]);
            return rt_fail_as(RT_STATUS_INPUT, "%s: the value %.17g%s among its last L=%zu points is outside "
                              "float32's range (|x| <= 3.4e+38): the models compute in float32. Fix: rescale the "
                              "series (e.g. divide by a power of 10) and undo that on the forecast.", what, x[i],
                              as_read, L);
        }
        mag = fmax(mag, fabs(x[i]));
        f_lo = fminf(f_lo, f);
        f_hi = fmaxf(f_hi, f);
        raw_mag = fmax(raw_mag, fabs(raw[i]));
        raw_lo = fmin(raw_lo, raw[i]);
        raw_hi = fmax(raw_hi, raw[i]);
    }
    if (mag > 0.0 && mag < FLT_MIN)
        return rt_fail_as(RT_STATUS_INPUT, "%s: its last L=%zu values have magnitude %.17g, below float32's "
                          "smallest normal number 1.18e-38: the models compute in float32, where they underflow to 0 "
                          "and the forecast would be meaningless. Fix: rescale the series (e.g. multiply by a power "
                          "of 10) and undo that on the forecast.", what, L, mag);
    if (raw_hi - raw_lo > FLT_EPSILON * raw_mag && f_lo == f_hi)
        return rt_fail_as(RT_STATUS_INPUT, "%s: its last L=%zu values vary (range %.17g) but are constant in "
                          "float32 after the bundle's training scaler: the model would see a flat line. Expected "
                          "values near the training data's scale. Fix: rescale the series and undo that on the "
                          "forecast.", what, L, raw_hi - raw_lo);
    return 0;
}
