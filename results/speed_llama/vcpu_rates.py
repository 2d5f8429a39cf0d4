"""One vCPU's rate against the other's at the same moment: python vcpu_rates.py CPU CALLS, run once per vCPU at
the same time (`python vcpu_rates.py 0 2000 & python vcpu_rates.py 1 2000; wait`). Each process pins itself to
its vCPU and times a 384 x 384 by 384 x 833 float32 numpy product (one OpenBLAS thread: set
OPENBLAS_NUM_THREADS=1), the size of a Bridging forecast's attention projection; prints the median in us.
(session 21: why a fixed split of a product between 2 threads waits; results/speed_llama.md section 21)"""
import os
import sys
import time

import numpy as np

cpu = int(sys.argv[1])
os.sched_setaffinity(0, {cpu})
a = np.random.rand(384, 384).astype(np.float32)
b = np.random.rand(384, 833).astype(np.float32)
t = []
for _ in range(int(sys.argv[2])):
    c = time.perf_counter()
    a @ b
    t.append(time.perf_counter() - c)
print(cpu, f"{1e6 * np.median(t):.0f} us")
