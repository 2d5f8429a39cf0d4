#include "alignts_kernels.h"

const char *at_status_str(int status) {
    switch (status) {
    case AT_OK: return "ok";
    case AT_ERR_ARG: return "bad argument";
    case AT_ERR_NONFINITE: return "non-finite input";
    case AT_ERR_ALL_NAN: return "a series has no observed value";
    case AT_ERR_RANGE: return "value too large to encode";
    case AT_ERR_SPACE: return "output row too small";
    case AT_ERR_TABLE: return "invalid codec table";
    default: return "unknown status";
    }
}
