"""A torch-free Internal bundle for the seal tests and the manifest fuzz target: an ONNX core (Reshape -> MatMul,
its weights in external data ``core.onnx.data``) and a GGUF core (tests/gguf_craft.py's tiny GPT-2, ``lm.gguf``,
with the patch embedding and head in ``io.npz``), each a variant the real InternalForecaster runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignts.runtime.manifest import Manifest, Variant, file_entries, write_manifest

L, H, P, S, N, D = 16, 4, 8, 8, 3, 32  # context, horizon, patch, stride, patches, GGUF width


def onnx_core(folder: Path) -> None:
    """core.onnx: patches [S, N, P] -> forecast [S, H], a MatMul whose weights sit in core.onnx.data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, N * P * H, dtype=np.float32).reshape(N * P, H), "w")
    shape = numpy_helper.from_array(np.array([-1, N * P], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["patches", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["forecast"])]
    g = helper.make_graph(
        nodes, "core", [helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["s", N, P])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["s", H])], [w, shape])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save_model(model, str(folder / "core.onnx"), save_as_external_data=True, location="core.onnx.data",
                    size_threshold=64)  # the weights, not the small shape constant


def io_arrays(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"patch_w": rng.standard_normal((D, P)).astype(np.float32) * 0.1,
            "patch_b": np.zeros(D, np.float32),
            "head_w": rng.standard_normal((H, N * D)).astype(np.float32) * 0.1 * scale,
            "head_b": np.full(H, scale, np.float32)}


def manifest_for(folder: Path) -> Manifest:
    onnx_files, gguf_files = ("core.onnx", "core.onnx.data"), ("lm.gguf", "io.npz")
    variants = (Variant("onnx-fp32", "onnx", "fp32", onnx_files, ("patches",), ("forecast",)),
                Variant("gguf-f32", "gguf", "f32", gguf_files,
                        extra={"lm_file": "lm.gguf", "io_file": "io.npz", "kv_type": "f32"}))
    return Manifest(paradigm="internal", architecture="gpt2", files=file_entries(folder, onnx_files + gguf_files),
                    variants=variants,
                    config={"context_len": L, "horizon": H, "n_channels": 1, "patch_len": P, "stride": S,
                            "n_patches": N, "d_model": D, "eps": 1e-5})


def build_bundle(folder: Path) -> Path:
    """The torch-free Internal bundle described in the module docstring."""
    from gguf_craft import tiny_gpt2

    folder.mkdir(parents=True)
    onnx_core(folder)
    tiny_gpt2(n_embd=D).write(folder / "lm.gguf")
    np.savez(folder / "io.npz", **io_arrays())
    write_manifest(folder, manifest_for(folder))
    return folder
