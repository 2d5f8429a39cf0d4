"""Patch the llama.cpp sources that llama-cpp-python vendors before scripts/setup builds its wheel.

    python scripts/patch_llama.py SDIST_DIR      (the unpacked llama-cpp-python sdist; idempotent)

Twenty-one changes, each refused loudly when the code they anchor to has moved (update this script then):

1. ggml looks for GGML_BACKEND_DL backends in the executable's folder and the working directory only, and
   llama-cpp-python never tells it where its own lib/ folder is (abetlen/llama-cpp-python#2069): also search the
   folder holding libggml itself, so the Python package and alignts-run find the CPU variants installed beside it.
2. native/ggml/: packed GEMMs for ggml's f32 x f32 products (x86-64 with AVX2+FMA or AVX-512), bf16 x f32
   (AVX-512 BF16; AMX-BF16 tiles where the CPU has them: change 10) and q8_0 x f32 (AVX-512 VNNI); ggml's other CPU variants and architectures keep llamafile's tinyBLAS. Copied next to
   llamafile/sgemm.cpp, alignts_gemm.h included at its end, alignts_mul_mat() called first in
   ggml_compute_forward_mul_mat.
3. ggml's f32 GELU (an f16 table, one value at a time) computed in f32, 16 / 8 values at a time (AVX-512 /
   AVX2+FMA; other CPUs keep the table). Changes 3, 5 and 11 are rows of native/ggml/alignts_ops.h, which ops.cpp
   includes after vec.h.
4. BERT's attention per sequence: a ubatch of S sequences of T tokens each (alignts' encoder batches) attends in
   S streams of [T x T] instead of one [S*T x S*T] product masked down to its diagonal blocks; the same values,
   1/S of the attention products and softmax. llama.cpp leaves this as a TODO at [TAG_NO_CACHE_PAD].
5. The row maximum of ggml's f32 softmax (ggml_vec_max_f32: a scalar loop, one dependent max an element) taken
   16 / 8 lanes at a time (AVX-512 / AVX); the same value.
6. The KV cells a causal step attends over (n_kv) padded to 32, not 256: llama.cpp pads so that a graph can be
   reused for 256 tokens, but every step then reads and multiplies up to 255 empty (masked) cells of each layer's K
   and V. A 1-sample decode of a 12 x 768 GPT-2 after a 294-token prompt: n_kv 512 -> 320, 6.1 -> 5.6 ms a step.
   The graph is rebuilt every 32 tokens instead. (ggml-cuda's flash-attention vector kernel wants multiples of 256;
   alignts runs flash attention on the CPU only.)
7. (in change 2's headers) an f16 KV cache's decode products: a step's few query tokens a head against K, and the
   attention weights against V's transposed rows, as f32 dot products with the halves widened in registers
   (native/ggml/alignts_sgemm_f32.h ``dot_rows_f16``, x86-64 with F16C); ggml rounds the query to f16 and takes one
   dot product an output. With it the Injective runtime and alignts-run keep a decode's cache in f16 where the
   weights are no finer (alignts.runtime.budget.decode_kv_type). No code of its own in libllama: the level says the
   kernels are there.
8. ggml's AMX path left out: the CPU backend never registers its AMX buffer type, so on an AMX Xeon q8_0 / q4_x
   weights stay where every other AVX-512 CPU keeps them and take the same kernels (change 2's VNNI q8_0 tiles
   included), in the portable build (the sapphirerapids variant) and in a GGML_NATIVE one alike. Measured on an
   Intel Xeon (family 6 model 207, AMX-INT8): with gcc 12, whose ``_tile_loadconfig`` builtin does not say it
   reads its argument, the stores of ggml_tile_config_init are dropped and the first tileloadd of a q8_0 prompt
   raises SIGILL (the process dies); with those stores kept, ggml's AMX q8_0 products are wrong at small widths
   (tiny GPT-2 / BERT / LLaMA, n_embd 64: hidden states 2.0-2.5 off torch, where the VNNI path is within 0.06).
9. ``int32_t alignts_llama_decode(struct llama_context *, const struct llama_batch *)``: llama_decode with the batch
   passed by pointer. llama_decode takes its 56-byte batch by value, which ctypes can pass but numba cannot; with
   this one the Injective sampler runs its whole decode loop (sample, stage the next tokens, decode, read the
   logits) in one compiled call without the GIL (alignts.runtime.backends.gguf_loop), instead of ~50 us of Python
   around every step. Nothing else in llama.cpp changes.
10. (in change 2's headers) bf16 x f32 products on AMX-BF16 tiles (native/ggml/alignts_gemm_amx.h): on an Intel Xeon
   with AMX-BF16 whose Linux grants the tile registers (arch_prctl ARCH_REQ_XCOMP_PERM, asked once a process),
   tdpbf16ps on change 2's bf16 token pack and the weight rows as they lie, written as inline assembly (the
   sapphirerapids variant has no -mamx-bf16, and gcc 12's _tile_loadconfig is change 8's SIGILL); ALIGNTS_AMX=0 in
   the environment keeps the AVX-512 BF16 tiles. Internal MiniLM gguf-bf16, one Xeon core: 58.8 -> 13.5 ms a
   forecast (results/speed_llama.md section 15). No code of its own in libllama: the level says the kernels are
   there.
11. ggml's element-wise rows that an encoder forecast spent ~23 % of its time in (perf, Internal MiniLM gguf-bf16 on
   AMX, one Xeon core), each in native/ggml/alignts_ops.h: V's transposed copy before the attention product (ggml
   calls memcpy for every 4-byte element; a size the compiler sees is a load and a store), layer norm's row sums
   (one element at a time into a double; now f32 vector accumulators), and a softmax row (five passes and scalar
   expf past the last 16 values; now three passes of AVX-512 registers with masked tails). 12.2 -> 10.2 ms a
   forecast for that bundle (results/speed_llama.md section 16). f32 sums in another order: hidden states move by
   ~1e-5 of 30.
12. (in change 2's headers) bf16 products of 256 tokens and more on AMX with the roles swapped
   (native/ggml/alignts_gemm_amx.h ``gemm_rows_paired``): the tokens as the tiles' A operand (rounded to bf16 in
   place), each thread's weight rows paired for the B operand once a call, so the accumulators hold C's own layout
   and go to it by tilestored, where change 10 transposed every 32 x 32 block in AVX-512 registers. The same sums,
   bit for bit; a batch of 8 MiniLM forecasts on the Xeon 1.10-1.12x faster on 1 and 2 threads, measured in step
   with level 11 (results/speed_llama.md section 17). No code of its own in libllama: the level says the kernels are there.
13. (in change 2's headers) the f32, bf16 and q8_0 tiles hand their outputs to C transposed in registers, a store
   of the tile's rows a token (native/ggml/alignts_sgemm_f32.h ``store_tile``), where each output went through a
   stack buffer one float at a time, and the f32 tile's k loop is unrolled 4 times. The same sums, bit for bit.
   On one Xeon core MiniLM's 36 f32 products run 1.17-1.19x faster; whole forecasts, level 12 against 13 in step:
   gguf-f32 1.04-1.09x (Internal) and gguf-q8_0 1.00-1.08x (results/speed_llama.md section 20). No code of its own
   in libllama: the level says the kernels are there.
14. (in change 2's headers) with 2 threads and more, the f32, q8_0 and bf16 products of more than one 32-token block
   hand out their jobs (a part of the weight rows x a group of token blocks) from ggml's shared chunk counter, as
   each thread finishes its last, where each thread had a fixed share (native/ggml/alignts_gemm.h
   ``for_each_job``; AMX's paired weights, paired once a thread, keep the fixed share). On a VM whose cores
   run at different rates from one moment to the next the faster thread no longer waits at the barrier for the
   slower. The same sums, bit for bit (1, 2 and 3 threads give equal hidden states). Also the bf16 (AVX-512 BF16)
   tile's k loop unrolled 4 times, as change 13 did the f32 tile's. Measured in step with level 13 on the Xeon
   (results/speed_llama.md section 21). No code of its own in libllama: the level says the kernels are there.
15. (in change 2's headers) the f32 tile on AVX-512 is 8 weight rows x 48 tokens (3 vectors), where it was 12 x 32:
   the same 24 accumulators, 8 row pointers that stay in general registers (gcc spilled 4 of the 12 to the stack
   inside the k loop) and 8 broadcasts per 24 multiply-adds instead of 12. Each output is the same k-ordered sum,
   except where a product's last block changes between the tile and the dot products for <= 7 tokens (48-token
   blocks leave other remainders than 32-token ones): Internal forecasts equal bit for bit, Bridging's within
   7.2e-7. MiniLM's 36 f32 products at 154 tokens on one Zen 4 core 1.034-1.046x faster; gguf-f32 forecasts
   1.010-1.038x against level 14 in step (results/speed_llama.md section 23). No code of its own in libllama: the
   level says the kernels are there.
16. f32 weights repacked once, when llama.cpp loads them, into panels of 16 rows k-major (native/ggml/
   alignts_panels_f32.h): a tensor trait of ggml's CPU_REPACK buffer type (repack.cpp, which does the same for q4_0
   on AVX2 and ARM) takes every contiguous 2-D f32 weight of a product whose rows are a multiple of 16, on CPU
   variants with change 2's f32 kernels, and multiplies it in tiles of 8 tokens x 48 rows (AVX-512; AVX2: 6 x 16)
   that broadcast each token's activation from its row as ggml lays it out: nothing is packed at a call, no lanes
   are empty, each token's outputs are stored as they lie. The product's bias ADD node, when it follows, is fused
   into the stores through ggml's CPU fusion hook (ggml-cpu.c ggml_cpu_try_fuse_ops), and so are a LayerNorm's NORM,
   MUL and ADD nodes (native/ggml/alignts_ops.h alignts_norm_mul_add, any dtype); GGML_CPU_DISABLE_FUSION=1 turns
   ggml's fusions off. llama-model-loader.cpp drops a mapped weight's pages from the process once it is copied into such
   a buffer (madvise MADV_DONTNEED on the read-only shared mapping: the page cache keeps them), so a repacked weight
   is not resident twice. The same k-ordered sums as the packed tile: forecasts equal bit for bit where that one
   ran its tile. MiniLM's 36 f32 products at 154 tokens on one Zen 4 core 1.09-1.11x faster than level 15 (and
   ~2 % faster than onnxruntime's MLAS); gguf-f32 forecasts 1.045-1.111x, the fusions another 1.00-1.03x
   (results/speed_llama.md section 24). ALIGNTS_F32_PANELS=0 in the environment keeps f32 weights in place.
17. (ggml's CPU backend and change 2's headers) three more nodes fused through ggml_cpu_try_fuse_ops: attention
   without a flash path, the KQ product, its softmax and the KQV product, as one node (native/ggml/alignts_gemm.h
   ``alignts_attention``): a job is one head's block of query tokens, whose scores stay in the thread's scratch
   (L1/L2) from the product through the softmax node's own row function (alignts_ops.h ``alignts_soft_max_row``,
   which ggml's SOFT_MAX node now calls too) into the KQV product, where ggml wrote and read ~T x T floats a head
   (2.7 MB a layer for 4 series of 119 tokens); the outputs wait in the thread's scratch until all jobs are done
   (ggml's allocator may give KQV the memory of Q or K). Where the KQV product's V is the transposed copy an
   encoder makes every layer (a CONT node before the three), the copy is not made: V's rows are read in place as
   panels of 16 dimensions (alignts_panels_f32.h ``gemm_transposed``). An FFN's GELU runs on each job's outputs of
   the fused product and bias add, through the GELU node's own row function. And the panels' products hand out
   smaller jobs to 2 threads and more (16 tokens x 32 jobs a thread, where 48 x 8 left one thread waiting up to a job
   at each product's end). The same values bit for bit as ggml's nodes (tiny BERT, GPT-2 with its KV cache, a GQA
   LLaMA; 1 and 2 threads). ggml-cpu.c counts each fused kind's nodes (``alignts_fused_nodes``, exported, for the
   tests). Measured against level 16 in step: results/speed_llama.md section 25.
18. (in change 2's headers) with 2 threads and more, the jobs of a linear layer's panels product and of the fused
   attention are taken from both ends of one list (native/ggml/alignts_gemm.h ``claim_from_both_ends``): the front
   holds the first part of the tokens, where ggml's row nodes (the residual ADD) give them to the first threads, the
   back the rest, and the threads claim shrinking runs of jobs from their own end through ggml's one chunk counter
   (its two 16-bit halves) until the ends meet. So with 2 threads each computes the outputs of its own tokens,
   which it reads again in the nodes after from its own L2, and still no share is fixed (change 14). The fused
   LayerNorm gives each thread a block of rows, as ggml's ADD does, where ggml's NORM interleaves them. The same
   values bit for bit (1-4 threads). Measured against level 17 in step: results/speed_llama.md section 26.
19. llama_context::encode returns a BERT's token embeddings (pooling none) only for the tokens the batch marks as
   outputs, where it marked every token an output: bert.cpp's last layer then runs its residual add, LayerNorms and
   FFN over those rows only (its ggml_get_rows on inp_out_ids was there, fed all rows). Bridging's head reads the
   last N patches' hidden states only (22 of 119 tokens a series in the speed bundle), so its backbone's last FFN
   runs on those. A caller that marks every token (alignts did, llama-cpp-python's embed does) gets what it got.
20. bert.cpp's last layer takes the output rows before its attention output projection (wo, bias), not after: the
   projection runs on those rows only too (Bridging: 22 of 119 tokens a series). The same cut a BERT backbone's ONNX
   graphs make (alignts/export/backbones/bert.py ``_forward_rows``).
21. ggml_aligned_malloc (every CPU buffer: weights read from the file, repacked panels, the KV cache, graph memory)
   gives an allocation of 2 MiB and more on Linux whole 2 MiB pages, aligned, and asks for transparent huge pages
   (madvise MADV_HUGEPAGE; nothing changes where THP is "never"). A decode step streams every weight from DRAM once:
   with 4 KB pages one core's hardware prefetchers stop at each page and its TLB misses every 4 KB. A 12 x 768 GPT-2
   at q8_0 read into huge pages, one sample, in step against the same file mapped: 1.15x (1 thread), 1.18x (2);
   read into 4 KB pages it was 0.94-0.96x of mapped (results/speed_llama.md section 28). So alignts reads a GGUF
   where this build and the kernel give huge pages (alignts.runtime.backends.gguf.huge_pages), and maps it in
   the lean plans. ALIGNTS_HUGE_PAGES=0 in the environment keeps ggml's 64-byte alignment and no advice.
libllama also exports ``int alignts_llama_patch_level(void)`` (PATCH_LEVEL: the number of changes), so alignts can
tell its own build from a stock one (an encoder's decode groups rely on change 4).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
KERNELS = HERE / "native" / "ggml"  # alignts_gemm.h (the entry point) and the kernels it includes
MARK = "alignts:"  # every insertion carries it, so a second run changes nothing
PATCH_LEVEL = 21  # alignts_llama_patch_level(): alignts.runtime.backends.gguf.llama_patch_level reads it


def insert(path: Path, anchor: str, text: str, *, before: bool = True) -> None:
    src = path.read_text()
    if MARK in src and text.strip() in src:
        return
    if src.count(anchor) != 1:
        sys.exit(f"[patch_llama] cannot patch {path}: the code around {anchor.strip()!r} changed; "
                 f"update scripts/patch_llama.py")
    path.write_text(src.replace(anchor, text + anchor if before else anchor + text))


def replace(path: Path, old: str, new: str) -> None:
    src = path.read_text()
    if new in src:
        return
    if src.count(old) != 1:
        sys.exit(f"[patch_llama] cannot patch {path}: the code {old.strip().splitlines()[0]!r} changed; "
                 f"update scripts/patch_llama.py")
    path.write_text(src.replace(old, new))


def replace_in_function(path: Path, function: str, old: str, new: str) -> None:
    """Replace the one ``old`` in the body of ``function`` (from its signature to the first line that is "}")."""
    src = path.read_text()
    start = src.find(function)
    end = src.find("\n}\n", start)
    body = src[start:end]
    if start >= 0 and new in body:
        return
    if start < 0 or end < 0 or body.count(old) != 1:
        sys.exit(f"[patch_llama] cannot patch {path}: {function.strip('(')} changed; update scripts/patch_llama.py")
    path.write_text(src[:start] + body.replace(old, new) + src[end:])


def attention_streams(llama: Path) -> None:
    """Change 4: llm_graph_input_attn_no_cache learns n_stream; its mask becomes one sequence's [T x T]."""
    header, graph = llama / "src" / "llama-graph.h", llama / "src" / "llama-graph.cpp"
    insert(header, "    ~llm_graph_input_attn_no_cache() = default;\n",
           "\n    // alignts: the ubatch attends as n_stream sequences of n_tokens/n_stream tokens; the mask is one of them\n"
           "    int64_t n_stream = 1;\n", before=False)
    replace(graph,
            "void llm_graph_input_attn_no_cache::set_input(const llama_ubatch * ubatch) {\n"
            "    const int64_t n_kv     = ubatch->n_tokens;\n"
            "    const int64_t n_tokens = ubatch->n_tokens;\n",
            "// alignts: S when a ubatch holds S >= 2 sequences of equal length T, each contiguous, one sequence a token,\n"
            "// all at the positions of the first: every sequence's mask is then the first one's, so attention can run\n"
            "// in S streams of [T x T]. 1 otherwise (and for the reservation ubatch, whose tokens have no sequence).\n"
            "static int64_t alignts_attn_streams(const llama_ubatch & ub) {\n"
            "    const uint32_t S = ub.n_seqs_unq;\n"
            "    if (S < 2 || ub.n_tokens % S != 0 || ub.n_pos != 1) {\n"
            "        return 1;\n"
            "    }\n"
            "    const uint32_t T = ub.n_tokens / S;\n"
            "    for (uint32_t i = 0; i < ub.n_tokens; ++i) {\n"
            "        if (ub.n_seq_id[i] != 1 || ub.seq_id[i][0] != ub.seq_id[i - i % T][0] || ub.pos[i] != ub.pos[i % T]) {\n"
            "            return 1;\n"
            "        }\n"
            "    }\n"
            "    return S;  // S blocks of one sequence each and S distinct sequences: no two blocks share one\n"
            "}\n\n"
            "void llm_graph_input_attn_no_cache::set_input(const llama_ubatch * ubatch) {\n"
            "    // alignts: with n_stream streams the mask is the first sequence's [T x T] (alignts_attn_streams)\n"
            "    const int64_t n_kv     = ubatch->n_tokens / n_stream;\n"
            "    const int64_t n_tokens = ubatch->n_tokens / n_stream;\n")
    insert(graph, "    auto inp = std::make_unique<llm_graph_input_attn_no_cache>(hparams, cparams);\n",
           "\n    // alignts: BERT (no KV bias, no cache) attends per sequence when the ubatch allows it; the mask below\n"
           "    // is then one stream's (this n_tokens shadows the member for the rest of the function). Not under flash\n"
           "    // attention: its CPU kernel skips masked cells itself and runs ~2x slower on streams (measured)\n"
           "    inp->n_stream = arch == LLM_ARCH_BERT && !cparams.flash_attn ? alignts_attn_streams(ubatch) : 1;\n"
           "    const int64_t n_tokens = this->n_tokens / inp->n_stream;\n", before=False)
    insert(graph,
           "    //assert(!ubatch.equal_seqs() || (k_cur->ne[3] == 1 && k_cur->ne[3] == ubatch.n_seqs_unq));\n\n"
           "    ggml_tensor * q = q_cur;\n    ggml_tensor * k = k_cur;\n    ggml_tensor * v = v_cur;\n",
           "\n    if (inp->n_stream > 1) {  // alignts: one stream a sequence; build_attn_mha splits q to match k\n"
           "        GGML_ASSERT(kq_b == nullptr && k->ne[3] == 1 && v->ne[3] == 1);\n"
           "        const int64_t S = inp->n_stream;\n"
           "        k = ggml_view_4d(ctx0, k, k->ne[0], k->ne[1], k->ne[2]/S, S, k->nb[1], k->nb[2], k->nb[2]*(k->ne[2]/S), 0);\n"
           "        v = ggml_view_4d(ctx0, v, v->ne[0], v->ne[1], v->ne[2]/S, S, v->nb[1], v->nb[2], v->nb[2]*(v->ne[2]/S), 0);\n"
           "    }\n", before=False)


PANELS_TRAIT = """
// alignts: 2-D f32 weights repacked into panels of 16 rows (native/ggml/alignts_panels_f32.h through
// alignts_gemm.h, scripts/patch_llama.py change 16): no work buffer, the product over ggml's threads
class alignts_f32_panels : public tensor_traits_base {
    bool work_size(int /* n_threads */, const struct ggml_tensor * op, size_t & size) override {
        size = 0;
        return op->op == GGML_OP_MUL_MAT;
    }
    bool compute_forward(struct ggml_compute_params * params, struct ggml_tensor * op) override {
        return op->op == GGML_OP_MUL_MAT && alignts_mul_mat_panels(params, op->src[0], op->src[1], op);
    }
    int repack(struct ggml_tensor * t, const void * data, size_t data_size) override {
        return alignts_panels_f32_pack(t, data, data_size);
    }
};
static const alignts_f32_panels alignts_panels;  // every panel tensor's trait (tensor->extra)

"""
PANELS_DECLS = """// alignts: f32 weights as panels (native/ggml/alignts_gemm.h, scripts/patch_llama.py change 16)
extern "C" bool alignts_panels_f32_fits(const struct ggml_tensor * t);
extern "C" int alignts_panels_f32_pack(struct ggml_tensor * t, const void * data, size_t size);
extern "C" bool alignts_mul_mat_panels(const struct ggml_compute_params * params, const struct ggml_tensor * src0,
                                       const struct ggml_tensor * src1, struct ggml_tensor * dst);

"""
PANELS_CHOICE = """    // alignts: f32 weights as panels where this CPU variant has alignts' f32 kernels (change 16)
    if (cur->type == GGML_TYPE_F32) {
        return ggml::cpu::repack::alignts_panels_f32_fits(cur) ? &ggml::cpu::repack::alignts_panels : nullptr;
    }
"""
PANELS_IS = """
// alignts: whether t holds panels (native/ggml/alignts_gemm.h's fused bias add asks; change 16)
extern "C" bool alignts_is_panels(const struct ggml_tensor * t) {
    return t->buffer && t->buffer->buft == ggml_backend_cpu_repack_buffer_type()
        && t->extra == (const void *) &ggml::cpu::repack::alignts_panels;
}
"""
FUSE_NODES = """    // alignts: attention's KQ product, its softmax and the KQV product in one node (change 17); first as the
    // transposed copy of V (a CONT, V's one reader the KQV product) with the three after it, views between them:
    // the copy is then not made
    if (node->op == GGML_OP_CONT && ggml_node_has_n_uses(cgraph, node_n, 1)) {
        int kq_n = node_n + 1;
        while (kq_n < cgraph->n_nodes && ggml_op_is_empty(cgraph->nodes[kq_n]->op)) {
            kq_n++;
        }
        if (kq_n + 2 < cgraph->n_nodes && cgraph->nodes[kq_n + 2]->op == GGML_OP_MUL_MAT
            && cgraph->nodes[kq_n + 2]->src[0] == node
            && alignts_attention_nodes(cgraph, kq_n, params, node)) {
            alignts_fused_count(params, ALIGNTS_FUSED_ATTENTION_V);
            return kq_n + 2 - node_n;
        }
    }
    if (alignts_attention_nodes(cgraph, node_n, params, NULL)) {
        alignts_fused_count(params, ALIGNTS_FUSED_ATTENTION);
        return 2;
    }
    // alignts: a product of panels and the bias add after it in one pass (change 16), and the GELU after that add
    // (change 17)
    if (node->op == GGML_OP_MUL_MAT) {
        const enum ggml_op alignts_gelu_ops[] = { GGML_OP_MUL_MAT, GGML_OP_ADD, GGML_OP_UNARY };
        if (ggml_can_fuse(cgraph, node_n, alignts_gelu_ops, 3)
            && alignts_mul_mat_panels_add(params, node, cgraph->nodes[node_n + 1], cgraph->nodes[node_n + 2])) {
            alignts_fused_count(params, ALIGNTS_FUSED_BIAS_GELU);
            return 2;
        }
        const enum ggml_op alignts_ops[] = { GGML_OP_MUL_MAT, GGML_OP_ADD };
        if (ggml_can_fuse(cgraph, node_n, alignts_ops, 2)
            && alignts_mul_mat_panels_add(params, node, cgraph->nodes[node_n + 1], NULL)) {
            alignts_fused_count(params, ALIGNTS_FUSED_BIAS);
            return 1;
        }
    }
    // alignts: a LayerNorm (NORM, then MUL by its weight and ADD of its bias) in one pass a row (change 16)
    if (node->op == GGML_OP_NORM) {
        const enum ggml_op alignts_norm_ops[] = { GGML_OP_NORM, GGML_OP_MUL, GGML_OP_ADD };
        if (ggml_can_fuse(cgraph, node_n, alignts_norm_ops, 3)
            && alignts_norm_mul_add(params, node, cgraph->nodes[node_n + 1], cgraph->nodes[node_n + 2])) {
            alignts_fused_count(params, ALIGNTS_FUSED_LAYER_NORM);
            return 2;
        }
    }

"""
FUSED_COUNTS = """// alignts: how many nodes of each fused kind ran in this process (thread 0 counts each), for the tests
// (tests/test_llama_speed.py reads them through the exported alignts_fused_nodes; change 17)
enum { ALIGNTS_FUSED_ATTENTION, ALIGNTS_FUSED_BIAS_GELU, ALIGNTS_FUSED_BIAS, ALIGNTS_FUSED_LAYER_NORM,
       ALIGNTS_FUSED_ATTENTION_V, ALIGNTS_FUSED_KINDS };
#if defined(__GNUC__)
static long long alignts_fused[ALIGNTS_FUSED_KINDS];
static void alignts_fused_count(const struct ggml_compute_params * params, int kind) {
    if (params->ith == 0) {
        __atomic_fetch_add(&alignts_fused[kind], 1, __ATOMIC_RELAXED);
    }
}
__attribute__((visibility("default"))) long long alignts_fused_nodes(int kind);
__attribute__((visibility("default"))) long long alignts_fused_nodes(int kind) {
    return kind >= 0 && kind < ALIGNTS_FUSED_KINDS ? __atomic_load_n(&alignts_fused[kind], __ATOMIC_RELAXED) : -1;
}
#else
static void alignts_fused_count(const struct ggml_compute_params * params, int kind) {
    (void) params, (void) kind;
}
#endif

// alignts: nodes kq_n, kq_n + 1 and kq_n + 2 are attention's KQ product, softmax and KQV product, kq and the
// softmax read once each, and alignts_attention (native/ggml/alignts_gemm.h) ran them as one node (change 17)
static bool alignts_attention_nodes(const struct ggml_cgraph * cgraph, int kq_n,
                                    const struct ggml_compute_params * params, const struct ggml_tensor * vt) {
    if (kq_n + 2 >= cgraph->n_nodes) {
        return false;
    }
    struct ggml_tensor * kq = cgraph->nodes[kq_n];
    struct ggml_tensor * sm = cgraph->nodes[kq_n + 1];
    struct ggml_tensor * kqv = cgraph->nodes[kq_n + 2];
    return kq->op == GGML_OP_MUL_MAT && sm->op == GGML_OP_SOFT_MAX && kqv->op == GGML_OP_MUL_MAT
        && sm->src[0] == kq && kqv->src[1] == sm && (kq->flags & GGML_TENSOR_FLAG_COMPUTE)
        && (sm->flags & GGML_TENSOR_FLAG_COMPUTE) && (kqv->flags & GGML_TENSOR_FLAG_COMPUTE)
        && ggml_node_has_n_uses(cgraph, kq_n, 1) && ggml_node_has_n_uses(cgraph, kq_n + 1, 1)
        && alignts_attention(params, vt, kq, sm, kqv);
}

"""
LOADER_DROP_PAGES = """// alignts: a mapped weight's pages once llama.cpp copied it into a buffer of its own (repacked or on a device):
// dropped from this process's resident set, as they stay in the page cache and the mapping reads them again if
// asked; only the pages wholly inside the weight (scripts/patch_llama.py change 16)
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
static void alignts_drop_pages(const void * data, size_t size) {
    const uintptr_t page = (uintptr_t) sysconf(_SC_PAGESIZE);
    const uintptr_t begin = ((uintptr_t) data + page - 1) / page * page, end = ((uintptr_t) data + size) / page * page;
    if (page && begin < end) {
        madvise((void *) begin, end - begin, MADV_DONTNEED);  // MAP_SHARED, read only: nothing is lost
    }
}
#else
static void alignts_drop_pages(const void *, size_t) {}
#endif
"""


HUGE_PAGES = """// alignts: an allocation of 2 MiB and more in whole 2 MiB pages, aligned, with transparent huge pages asked for
// (scripts/patch_llama.py change 21); ALIGNTS_HUGE_PAGES=0 in the environment: ggml's own alignment, no advice
#if defined(__linux__)
#include <sys/mman.h>
static int alignts_aligned_alloc(void ** memory, size_t alignment, size_t * size) {
    const size_t huge = (size_t) 2 << 20;
    const char * off = getenv("ALIGNTS_HUGE_PAGES");
    if (*size < huge || (off && off[0] == '0' && off[1] == 0)) {
        return posix_memalign(memory, alignment, *size);
    }
    *size = (*size + huge - 1) / huge * huge;
    const int result = posix_memalign(memory, huge, *size);
    if (result == 0) {
        madvise(*memory, *size, MADV_HUGEPAGE);  // a hint: THP "never", or no huge page free, keeps 4 KB pages
    }
    return result;
}
#elif !defined(_WIN32)
static int alignts_aligned_alloc(void ** memory, size_t alignment, size_t * size) {
    return posix_memalign(memory, alignment, *size);
}
#endif

"""


def huge_pages(ggml_c: Path) -> None:
    """Change 21: ggml_aligned_malloc's large allocations in transparent huge pages on Linux."""
    insert(ggml_c, "void * ggml_aligned_malloc(size_t size) {\n", HUGE_PAGES)
    replace_in_function(ggml_c, "void * ggml_aligned_malloc(size_t size) {",
                        "    int result = posix_memalign(&aligned_memory, alignment, size);\n",
                        "    int result = alignts_aligned_alloc(&aligned_memory, alignment, &size);  // alignts: change 21\n")


def repack_panels(repack: Path) -> None:
    """Change 16: f32 weights repacked into panels by a tensor trait of ggml's CPU_REPACK buffer type."""
    insert(repack, "template <typename BLOC_TYPE, int64_t INTER_SIZE, int64_t NB_COLS, ggml_type PARAM_TYPE> "
           "class tensor_traits : public tensor_traits_base {\n", PANELS_DECLS + PANELS_TRAIT)
    insert(repack, "static const ggml::cpu::tensor_traits * ggml_repack_get_optimal_repack_type("
           "const struct ggml_tensor * cur) {\n", PANELS_CHOICE, before=False)
    insert(repack, "ggml_backend_buffer_type_t ggml_backend_cpu_repack_buffer_type(void) {\n", PANELS_IS + "\n")


def fuse_nodes(ggml_cpu: Path) -> None:
    """Change 16: a panels product and its bias add as one node, and a LayerNorm's three nodes as one (ggml's CPU
    fusion hook)."""
    insert(ggml_cpu, "static int ggml_cpu_try_fuse_ops(\n",
           "// alignts: native/ggml/alignts_gemm.h (scripts/patch_llama.py change 16)\n"
           "bool alignts_mul_mat_panels_add(const struct ggml_compute_params * params, const struct ggml_tensor * mm,\n"
           "                                const struct ggml_tensor * add, struct ggml_tensor * gelu);\n"
           "bool alignts_attention(const struct ggml_compute_params * params, const struct ggml_tensor * vt,\n"
           "                       struct ggml_tensor * kq, const struct ggml_tensor * sm, struct ggml_tensor * kqv);\n"
           "// alignts: native/ggml/alignts_ops.h, in ops.cpp (change 16)\n"
           "bool alignts_norm_mul_add(const struct ggml_compute_params * params, const struct ggml_tensor * norm,\n"
           "                          const struct ggml_tensor * mul, struct ggml_tensor * add);\n\n" + FUSED_COUNTS)
    replace_in_function(ggml_cpu, "static int ggml_cpu_try_fuse_ops(",
                        "    if (node->op == GGML_OP_RMS_NORM) {\n", FUSE_NODES + "    if (node->op == GGML_OP_RMS_NORM) {\n")


def encoder_outputs(context: Path) -> None:
    """Change 19: llama_context::encode computes and returns a BERT's token embeddings (pooling none) only for the
    tokens the batch marks as outputs, where it marked them all (output_all); bert.cpp's last layer already takes its
    residual, norms and FFN over the output rows only (ggml_get_rows on inp_out_ids)."""
    fn = "int llama_context::encode(const llama_batch_ext & batch_inp) {"
    replace_in_function(context, fn,
                        "    if (!balloc->init(batch_inp, model.vocab, true)) {\n",
                        "    // alignts: a BERT's token embeddings only for the tokens marked as outputs (change 19)\n"
                        "    const bool alignts_marked = model.arch == LLM_ARCH_BERT && cparams.embeddings\n"
                        "        && cparams.pooling_type == LLAMA_POOLING_TYPE_NONE;\n"
                        "    if (!balloc->init(batch_inp, model.vocab, !alignts_marked)) {\n")
    replace_in_function(context, fn,
                        "    for (uint32_t i = 0; i < n_tokens; ++i) {\n        output_ids[i] = i;\n    }\n\n"
                        "    n_outputs = n_tokens;\n",
                        "    // alignts: output row j for the j-th token marked (all of them unless change 19 applies)\n"
                        "    n_outputs = 0;\n"
                        "    for (uint32_t i = 0; i < n_tokens; ++i) {\n"
                        "        output_ids[i] = ubatch.output[i] ? (int32_t) n_outputs++ : -1;\n"
                        "    }\n")
    replace_in_function(context, fn,
                        "ggml_backend_tensor_get_async(backend_res, t_logits, logits.data, 0, "
                        "n_tokens*n_vocab*sizeof(float));",
                        "ggml_backend_tensor_get_async(backend_res, t_logits, logits.data, 0, "
                        "n_outputs*n_vocab*sizeof(float));  // alignts: n_outputs")
    replace_in_function(context, fn,
                        "ggml_backend_tensor_get_async(backend_embd, t_embd, embd.data, 0, "
                        "n_tokens*n_embd_out*sizeof(float));",
                        "ggml_backend_tensor_get_async(backend_embd, t_embd, embd.data, 0, "
                        "n_outputs*n_embd_out*sizeof(float));  // alignts: n_outputs")


def encoder_output_projection(bert: Path) -> None:
    """Change 20: bert.cpp's last layer takes its output rows (inp_out_ids) before the attention's output
    projection, so the projection and its bias run on those rows only (build_attn without wo, then get_rows, wo)."""
    replace(bert,
            "            cur = build_attn(inp_attn,\n"
            "                    model.layers[il].wo, model.layers[il].wo_b, model.layers[il].wo_s,\n"
            "                    Qcur, Kcur, Vcur, nullptr, nullptr, nullptr, 1.0f / sqrtf(float(n_embd_head)), il);\n"
            "            cb(cur, \"kqv_out\", il);\n"
            "        }\n\n"
            "        if (il == n_layer - 1 && inp_out_ids) {\n"
            "            cur  = ggml_get_rows(ctx0, cur, inp_out_ids);\n",
            "            // alignts: the last layer's output rows taken before the output projection (change 20)\n"
            "            const bool alignts_cut = il == n_layer - 1 && inp_out_ids;\n"
            "            const auto & ly = model.layers[il];\n"
            "            cur = build_attn(inp_attn,\n"
            "                    alignts_cut ? nullptr : ly.wo, alignts_cut ? nullptr : ly.wo_b, alignts_cut ? nullptr : ly.wo_s,\n"
            "                    Qcur, Kcur, Vcur, nullptr, nullptr, nullptr, 1.0f / sqrtf(float(n_embd_head)), il);\n"
            "            cb(cur, \"kqv_out\", il);\n"
            "            if (alignts_cut) {\n"
            "                cur = build_lora_mm(ly.wo, ggml_get_rows(ctx0, cur, inp_out_ids), ly.wo_s);\n"
            "                if (ly.wo_b) {\n"
            "                    cur = ggml_add(ctx0, cur, ly.wo_b);\n"
            "                }\n"
            "            }\n"
            "        }\n\n"
            "        if (il == n_layer - 1 && inp_out_ids) {\n")


def main(sdist: Path) -> None:
    ggml = sdist / "vendor" / "llama.cpp" / "ggml" / "src"
    if not ggml.is_dir():
        sys.exit(f"[patch_llama] {ggml} is missing: pass the unpacked llama-cpp-python sdist")

    insert(ggml / "ggml-backend-reg.cpp", "        // default search paths: executable directory, current directory\n",
           "#if !defined(_WIN32)\n"
           "        // alignts: the folder holding libggml, where a relocatable package keeps its backends\n"
           "        {\n"
           "            Dl_info info;\n"
           "            if (dladdr((const void *) &ggml_backend_load_all, &info) && info.dli_fname) {\n"
           "                search_paths.push_back(fs::u8path(info.dli_fname).parent_path());\n"
           "            }\n"
           "        }\n"
           "#endif\n")

    cpu = ggml / "ggml-cpu"
    for header in sorted(KERNELS.glob("*.h")):
        shutil.copyfile(header, cpu / "llamafile" / header.name)
    sgemm = cpu / "llamafile" / "sgemm.cpp"
    src = sgemm.read_text()
    if MARK not in src:
        sgemm.write_text(src + "\n// alignts: packed GEMMs (scripts/patch_llama.py)\n#include \"alignts_gemm.h\"\n")
    insert(cpu / "llamafile" / "sgemm.h", "#ifdef __cplusplus\n}\n#endif",
           "// alignts: true when it computed dst = src0 x src1 (native/ggml/alignts_gemm.h)\n"
           "struct ggml_tensor;\n"
           "bool alignts_mul_mat(const struct ggml_compute_params * params, const struct ggml_tensor * src0,\n"
           "                     const struct ggml_tensor * src1, struct ggml_tensor * dst);\n\n")
    insert(cpu / "ggml-cpu.c",
           "    if (ggml_compute_forward_mul_mat_tiled(params, dst)) {\n        return;\n    }\n",
           "\n#if GGML_USE_LLAMAFILE\n"
           "    // alignts: packed GEMMs (scripts/patch_llama.py)\n"
           "    if (alignts_mul_mat(params, src0, src1, dst)) {\n        return;\n    }\n"
           "#endif\n", before=False)
    ops = cpu / "ops.cpp"  # changes 3, 5 and 11: row kernels of native/ggml/alignts_ops.h in place of ggml's loops
    insert(ops, '#include "vec.h"\n', '#include "llamafile/alignts_ops.h"  // alignts (scripts/patch_llama.py)\n',
           before=False)
    replace_in_function(ops, "static void ggml_compute_forward_gelu_f32(", "ggml_vec_gelu_f32(nc,",
                        "alignts_vec_gelu_f32(nc,")
    replace_in_function(ops, "static void ggml_compute_forward_soft_max_f32(", "ggml_vec_max_f32(ne00, &max, wp);",
                        "max = alignts_vec_max_f32(ne00, wp);  // alignts")
    row = "                ggml_vec_cpy_f32  (ne00, wp, sp);\n"
    replace_in_function(ops, "static void ggml_compute_forward_soft_max_f32(", row,
                        "                // alignts: the whole row in AVX-512 registers (change 11), else ggml's passes, in one\n"
                        "                // function that the fused attention calls too (change 17)\n"
                        "                if (!use_f16 && !sk) {\n"
                        "                    alignts_soft_max_row(ne00, dp, sp, mp_f32, scale, slope, wp);\n"
                        "                    continue;\n"
                        "                }\n" + row)
    replace_in_function(ops, "static void ggml_compute_forward_norm_f32(", "ggml_vec_sum_f32(ne00, &sum, xf);",
                        "sum = alignts_vec_sum_f32(ne00, xf);  // alignts")
    replace_in_function(ops, "static void ggml_compute_forward_norm_f32(",
                        "variance = ggml_vec_cvar_f32(ne00, yf, xf, mean);",
                        "variance = alignts_vec_cvar_f32(ne00, yf, xf, mean);  // alignts")
    for copy in ("memcpy(dst_ptr + id, src0_ptr, type_size);", "memcpy(dst_ptr, src0_ptr, type_size);"):
        replace_in_function(ops, "static void ggml_compute_forward_dup_bytes(", copy,
                            copy.replace("memcpy(", "alignts_copy_element(").replace(";", ";  // alignts"))
    huge_pages(ggml / "ggml.c")  # change 21
    repack_panels(cpu / "repack.cpp")  # change 16
    fuse_nodes(cpu / "ggml-cpu.c")
    insert(sdist / "vendor" / "llama.cpp" / "src" / "llama-model-loader.cpp",
           "                ggml_backend_tensor_set(cur, data, 0, n_size);\n",
           "                alignts_drop_pages(data, n_size);  // alignts: change 16\n", before=False)
    insert(sdist / "vendor" / "llama.cpp" / "src" / "llama-model-loader.cpp", "#include <algorithm>\n",
           LOADER_DROP_PAGES)
    replace_in_function(cpu / "ggml-cpu.cpp", "std::vector<ggml_backend_buffer_type_t> & "
                        "ggml_backend_cpu_get_extra_buffer_types() {",
                        "#if defined(__AMX_INT8__) && defined(__AVX512VNNI__)\n        if (ggml_backend_amx_buffer_type())",
                        "#if 0  // alignts: ggml's AMX path left out (scripts/patch_llama.py change 8)\n"
                        "        if (ggml_backend_amx_buffer_type())")
    attention_streams(sdist / "vendor" / "llama.cpp")
    encoder_outputs(sdist / "vendor" / "llama.cpp" / "src" / "llama-context.cpp")
    encoder_output_projection(sdist / "vendor" / "llama.cpp" / "src" / "models" / "bert.cpp")
    replace(sdist / "vendor" / "llama.cpp" / "src" / "llama-kv-cache.cpp",
            "    const uint32_t n_pad_cur = std::max(n_pad, 256u);\n",
            "    // alignts: 32, not 256: fewer masked cells read a step, the graph rebuilt every 32 tokens\n"
            "    const uint32_t n_pad_cur = std::max(n_pad, 32u);\n")
    insert(sdist / "vendor" / "llama.cpp" / "src" / "llama.cpp", "bool llama_supports_mmap(void) {\n",
           "// alignts: how many of scripts/patch_llama.py's changes this build carries (0 or missing: a stock build)\n"
           f"extern \"C\" LLAMA_API int alignts_llama_patch_level(void) {{ return {PATCH_LEVEL}; }}\n\n"
           "// alignts: llama_decode with the batch by pointer, callable from compiled code (change 9)\n"
           "extern \"C\" LLAMA_API int32_t alignts_llama_decode(struct llama_context * ctx, "
           "const struct llama_batch * batch) {\n"
           "    return llama_decode(ctx, *batch);\n"
           "}\n\n")
    print(f"[patch_llama] patched {ggml.parent.parent}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
