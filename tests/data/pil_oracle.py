"""PIL / torchvision oracle for fgmoe's data tests.

Reads a JSON list of jobs, runs each with PIL (and torchvision where the
reference pipeline uses it) and writes the resulting pixels as raw bytes
(height x width x channels, uint8). Inputs are raw interleaved images or encoded
files.
"""
import json
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

RESAMPLE = {
    "nearest": Image.NEAREST,
    "box": Image.BOX,
    "bilinear": Image.BILINEAR,
    "hamming": Image.HAMMING,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}


def load_raw(job):
    mode = job.get("mode", "RGB")
    channels = 3 if mode == "RGB" else 1
    data = np.fromfile(job["input"], dtype=np.uint8)
    shape = (job["height"], job["width"], channels) if channels > 1 else (job["height"], job["width"])
    return Image.fromarray(data.reshape(shape), mode)


def fill_of(job, mode):
    fill = job.get("fill", 0)
    if mode == "RGB" and not isinstance(fill, list):
        fill = [fill] * 3
    return tuple(fill) if isinstance(fill, list) else fill


def run(job):
    op = job["op"]
    if op == "encode":
        img = load_raw(job)
        if "convert" in job:
            img = img.convert(job["convert"])
        img.save(job["path"], **job.get("options", {}))
        return None
    if op == "decode":
        return Image.open(job["input"]).convert("RGB")
    if op == "tv_resized_crop":
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode
        img = Image.open(job["input"]).convert("RGB")
        x, y, w, h = job["crop"]
        return F.resized_crop(img, y, x, h, w, [job["size"], job["size"]], InterpolationMode.BICUBIC)
    if op == "tv_eval":
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode
        img = Image.open(job["input"]).convert("RGB")
        t = transforms.Compose([transforms.Resize(job["resize"], interpolation=InterpolationMode.BICUBIC),
                                transforms.CenterCrop(job["size"])])
        return t(img)
    img = load_raw(job)
    if op == "tv_normalize":
        import torch
        from torchvision import transforms
        t = transforms.Compose([transforms.ToTensor(),
                                transforms.Normalize(mean=torch.tensor((0.485, 0.456, 0.406)),
                                                     std=torch.tensor((0.229, 0.224, 0.225)))])
        return t(img).numpy()
    if op == "resize":
        x, y, w, h = job["crop"]
        box = tuple(job["box"]) if "box" in job else None
        return img.crop((x, y, x + w, y + h)).resize(tuple(job["size"]), RESAMPLE[job["filter"]], box=box)
    if op == "affine":
        return img.transform(img.size, Image.AFFINE, tuple(job["data"]), resample=RESAMPLE[job["filter"]],
                             fillcolor=fill_of(job, img.mode))
    if op == "rotate":
        return img.rotate(job["degrees"], resample=RESAMPLE[job["filter"]], fillcolor=fill_of(job, img.mode))
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "invert":
        return ImageOps.invert(img)
    if op == "solarize":
        return ImageOps.solarize(img, job["threshold"])
    if op == "solarize_add":
        lut = [min(255, i + job["add"]) if i < job["threshold"] else i for i in range(256)]
        return img.point(lut * 3 if img.mode == "RGB" else lut)
    if op == "posterize":
        return ImageOps.posterize(img, job["bits"])
    if op in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[op]
        return enhancer(img).enhance(job["factor"])
    raise ValueError("unknown op " + op)


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        out = run(job)
        if out is None:
            continue
        if isinstance(out, np.ndarray) and out.dtype == np.float32:
            np.ascontiguousarray(out).tofile(job["output"])
            continue
        np.ascontiguousarray(np.asarray(out, dtype=np.uint8)).tofile(job["output"])


if __name__ == "__main__":
    main()
