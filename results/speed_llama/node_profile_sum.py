"""(session 25, results/speed_llama.md section 25) Sums node_profile_patch.py's FILEs by node kind (op and name, layers
together), per backbone_loop.py call (a call is two decodes): compute / wait ms of thread 0 (and 1).
    python node_profile_sum.py FILE [FILE ...]"""
import collections
import sys

for path in sys.argv[1:]:
    rows = [line.rstrip("\n").split("\t") for line in open(path)]
    calls = max(int(r[2]) for r in rows) / 2
    tot = collections.defaultdict(lambda: [0.0] * 4)
    for r in rows:
        name = r[1]
        kind = name.rsplit("-", 1)[0] if "-" in name and name[-1].isdigit() else name.split(":")[0]
        for i in range(4):
            tot[kind][i] += float(r[3 + i]) / calls
    s = [sum(v[i] for v in tot.values()) for i in range(4)]
    print(f"{path}: wall {s[0] + s[1]:.2f} ms; compute {s[0]:.2f} / {s[2]:.2f}, waits {s[1]:.2f} / {s[3]:.2f}")
    for kind, v in sorted(tot.items(), key=lambda kv: -kv[1][0]):
        if v[0] >= 0.05:
            print(f"   {kind:34s} {v[0]:6.2f} / {v[1]:5.2f}   {v[2]:6.2f} / {v[3]:5.2f}")
