// How fast this machine's AMX runs from one moment to the next: tdpbf16ps on four independent accumulators, operands
// in tile registers (no memory), in slices of 2000 instructions right after an idle gap, and on one vCPU alone
// against both at once (one thread pinned to each). The peak of a Sapphire Rapids core is one tdpbf16ps (16 x 16 x 32
// multiply-adds) every 16 cycles.
//   g++ -O2 -march=sapphirerapids -pthread -I native/ggml -o /tmp/amx_phases results/speed_llama/amx_phases.cpp
//   /tmp/amx_phases          (session 17: amx_phases.txt; results/speed_llama.md section 17)
#include "alignts_gemm_amx.h"

#include <pthread.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#define TL(t, base) asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((int64_t) 64) : "memory")
#define TDP(c, a, b) asm volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

alignas(64) static uint16_t ones[16 * 32];

static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ns a tdpbf16ps over n groups of four
static double tdp_ns(long n) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
        TDP(0, 4, 6);
        TDP(1, 4, 7);
        TDP(2, 5, 6);
        TDP(3, 5, 7);
    }
    return seconds_since(t0) * 1e9 / (4.0 * n);
}

static void tiles_ready() {
    alignts_amx::load_config();
    TL(4, ones);
    TL(5, ones);
    TL(6, ones);
    TL(7, ones);
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int main() {
    if (!alignts_amx::available()) {
        std::printf("no AMX-BF16 here\n");
        return 1;
    }
    for (auto & x : ones) {
        x = 0x3f80;  // 1.0 in bf16
    }
    for (int idle_ms : {50, 0}) {
        std::thread([idle_ms] {
            pin(0);
            tiles_ready();
            for (int trial = 0; trial < 5; ++trial) {
                std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
                std::printf("after %2d ms idle, ns a tdpbf16ps, slices of 2000:", idle_ms);
                for (int s = 0; s < 12; ++s) {
                    std::printf(" %.1f", tdp_ns(500));
                }
                std::printf("\n");
            }
            alignts_amx::release();
        }).join();
    }
    for (int rep = 0; rep < 6; ++rep) {
        double one = 0, two[2] = {0, 0};
        std::thread([&] { pin(0); tiles_ready(); one = tdp_ns(500000); alignts_amx::release(); }).join();
        std::vector<std::thread> both;
        for (int c = 0; c < 2; ++c) {
            both.emplace_back([&two, c] { pin(c); tiles_ready(); two[c] = tdp_ns(500000); alignts_amx::release(); });
        }
        for (auto & t : both) {
            t.join();
        }
        std::printf("GFLOP/s: vCPU 0 alone %.0f | both at once: vCPU 0 %.0f, vCPU 1 %.0f\n", 16384 / one, 16384 / two[0],
                    16384 / two[1]);
    }
}
