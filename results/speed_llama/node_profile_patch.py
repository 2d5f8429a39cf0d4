"""(session 25, results/speed_llama.md section 25) A timer for every node of ggml's CPU graphs, for a development build only
(never shipped): patches ggml-cpu.c of a tree scripts/patch_llama.py already patched, so that with ALIGNTS_PROF=FILE in
the environment each thread adds up, per node index, the time it computed the node (fused nodes under their first) and
the time it then waited at the barrier, and thread 0 writes FILE at exit (index, op:name, count, compute and wait of
threads 0 and 1, ms). Two clock reads a node; nothing without the variable.
    python node_profile_patch.py SDIST_DIR   (then build one CPU variant, e.g. ninja ggml-cpu-zen4, and put it beside a
    copy of the wheel's llama_cpp package; node_profile_sum.py reads FILE)"""
import sys

p = sys.argv[1]+'/vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu.c'; s=open(p).read()
hdr='''
#include <time.h>
#define APROF_N 2048
static int aprof_on = -1;
static char aprof_name[APROF_N][96];
static double aprof_comp[4][APROF_N], aprof_wait[4][APROF_N];
static long aprof_cnt[APROF_N];
static inline double aprof_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec * 1e-6; }
static void aprof_dump(void) {
    FILE * f = fopen(getenv("ALIGNTS_PROF"), "w"); if (!f) return;
    for (int i = 0; i < APROF_N; ++i) if (aprof_cnt[i]) fprintf(f, "%d\\t%s\\t%ld\\t%.3f\\t%.3f\\t%.3f\\t%.3f\\n", i, aprof_name[i], aprof_cnt[i], aprof_comp[0][i], aprof_wait[0][i], aprof_comp[1][i], aprof_wait[1][i]);
    fclose(f);
}
'''
anchor='static thread_ret_t ggml_graph_compute_thread(void * data) {'
s=s.replace(anchor, hdr+anchor,1)
old='''        const int n_fused = ggml_cpu_try_fuse_ops(cgraph, node_n, &params, cplan);
        if (n_fused > 0) {
            node_n += n_fused;
        } else {
            ggml_compute_forward(&params, node);
        }
'''
new='''        if (aprof_on < 0) { aprof_on = getenv("ALIGNTS_PROF") != NULL; if (aprof_on && state->ith == 0) atexit(aprof_dump); }
        const int node0 = node_n;
        double t0 = aprof_on ? aprof_now() : 0;
        const int n_fused = ggml_cpu_try_fuse_ops(cgraph, node_n, &params, cplan);
        if (n_fused > 0) {
            node_n += n_fused;
        } else {
            ggml_compute_forward(&params, node);
        }
        double t1 = aprof_on ? aprof_now() : 0;
'''
assert old in s; s=s.replace(old,new,1)
old2='''        if (node_n + 1 < cgraph->n_nodes) {
            ggml_barrier(state->threadpool);
        }
    }
'''
new2='''        if (node_n + 1 < cgraph->n_nodes) {
            ggml_barrier(state->threadpool);
        }
        if (aprof_on && node0 < APROF_N && state->ith < 4) {
            double t2 = aprof_now();
            aprof_comp[state->ith][node0] += t1 - t0; aprof_wait[state->ith][node0] += t2 - t1;
            if (state->ith == 0) { aprof_cnt[node0]++; snprintf(aprof_name[node0], 96, "%s%s:%s", ggml_op_desc(node), n_fused > 0 ? "+fused" : "", node->name); }
        }
    }
'''
assert old2 in s; s=s.replace(old2,new2,1)
open(p,'w').write(s)
