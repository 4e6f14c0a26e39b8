"""The peer of fgmoe-data-bench: the reference's training pipeline in PIL and
torchvision, run on the same files.

Per sample: PIL decode -> RandomResizedCrop(224, bicubic; mask nearest) ->
horizontal flip p 0.5 -> RandAugment rand-m9-mstd0.5-inc1 (2 ops, p 0.5 each,
magnitude N(9, 0.5); rotate/shear/translate move the mask with nearest) ->
ToTensor -> Normalize -> RandomErasing (p 0.25, per-pixel normal noise, mask
zeroed). timm is not a dependency: the ops are written here with the same PIL
calls and parameters as the reference's copy of timm's RandAugment.

Prints one JSON line: {"images_per_second": ..., "seconds": [...]}.
"""
import argparse
import json
import math
import os
import random
import time

import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

FILL = (124, 116, 104)  # round(255 * ImageNet mean)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def negate(v):
    return -v if random.random() > 0.5 else v


def affine(img, mask, data):
    img = img.transform(img.size, Image.AFFINE, data, resample=Image.BICUBIC, fillcolor=FILL)
    if mask is not None:
        mask = mask.transform(mask.size, Image.AFFINE, data, fillcolor=0)
    return img, mask


def enhance(kind):
    def op(img, mask, level):
        factor = max(0.1, 1.0 + negate(level / 10.0 * 0.9))
        return kind(img).enhance(factor), mask
    return op


def rotate(img, mask, level):
    degrees = negate(level / 10.0 * 30.0)
    img = img.rotate(degrees, resample=Image.BICUBIC, fillcolor=FILL)
    return img, (mask.rotate(degrees, fillcolor=0) if mask is not None else None)


def solarize_add(img, mask, level):
    add = int(level / 10.0 * 110)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * 3), mask


OPS = [
    lambda img, mask, level: (ImageOps.autocontrast(img), mask),
    lambda img, mask, level: (ImageOps.equalize(img), mask),
    lambda img, mask, level: (ImageOps.invert(img), mask),
    rotate,
    lambda img, mask, level: (ImageOps.posterize(img, 4 - int(level / 10.0 * 4)), mask),
    lambda img, mask, level: (ImageOps.solarize(img, 256 - int(level / 10.0 * 256)), mask),
    solarize_add,
    enhance(ImageEnhance.Color),
    enhance(ImageEnhance.Contrast),
    enhance(ImageEnhance.Brightness),
    enhance(ImageEnhance.Sharpness),
    lambda img, mask, level: affine(img, mask, (1, negate(level / 10.0 * 0.3), 0, 0, 1, 0)),
    lambda img, mask, level: affine(img, mask, (1, 0, 0, negate(level / 10.0 * 0.3), 1, 0)),
    lambda img, mask, level: affine(img, mask, (1, 0, negate(level / 10.0 * 0.45) * img.size[0], 0, 1, 0)),
    lambda img, mask, level: affine(img, mask, (1, 0, 0, 0, 1, negate(level / 10.0 * 0.45) * img.size[1])),
]


class TrainPipeline:
    def __init__(self, size=224):
        self.size = size
        self.to_tensor = transforms.ToTensor()
        self.normalize = transforms.Normalize(MEAN, STD)
        self.to_pil = transforms.ToPILImage()

    def random_erasing(self, x, mask, p=0.25):
        if random.random() > p:
            return
        _, h, w = x.shape
        area = h * w
        for _ in range(10):
            target = random.uniform(0.02, 1 / 3) * area
            aspect = math.exp(random.uniform(math.log(0.3), math.log(1 / 0.3)))
            eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if ew < w and eh < h:
                top, left = random.randint(0, h - eh), random.randint(0, w - ew)
                x[:, top:top + eh, left:left + ew] = torch.empty((3, eh, ew)).normal_()
                if mask is not None:
                    mask[:, top:top + eh, left:left + ew] = 0
                return

    def __call__(self, path, mask_path):
        img = Image.open(path).convert("RGB")
        mask = None
        if mask_path:
            mask = self.to_pil(torch.load(mask_path, map_location="cpu", weights_only=True))
        i, j, h, w = transforms.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
        img = F.resized_crop(img, i, j, h, w, [self.size, self.size], InterpolationMode.BICUBIC)
        if mask is not None:
            mask = F.resized_crop(mask, i, j, h, w, [self.size, self.size], InterpolationMode.NEAREST)
        if random.random() < 0.5:
            img = F.hflip(img)
            mask = F.hflip(mask) if mask is not None else None
        for op in random.choices(OPS, k=2):
            if random.random() > 0.5:
                continue
            level = max(0.0, min(10.0, random.gauss(9, 0.5)))
            img, mask = op(img, mask, level)
        x = self.normalize(self.to_tensor(img))
        m = self.to_tensor(mask) if mask is not None else None
        self.random_erasing(x, m)
        return x, (m if m is not None else torch.zeros(1, self.size, self.size))


class Files(torch.utils.data.Dataset):
    def __init__(self, items, pipeline):
        self.items = items
        self.pipeline = pipeline

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        image, mask, label = self.items[k]
        x, m = self.pipeline(image, mask)
        return x, m, label


def scan(root, masks):
    items = []
    train = os.path.join(root, "train")
    for label, name in enumerate(sorted(os.listdir(train))):
        for f in sorted(os.listdir(os.path.join(train, name))):
            mask = os.path.join(root, "train_mask", name, os.path.splitext(f)[0] + ".pth")
            items.append((os.path.join(train, name, f), mask if masks else None, label))
    return items


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--masks", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    items = scan(args.dir, args.masks)
    pipeline = TrainPipeline()
    seconds = []
    if args.threads == 1:
        # Process CPU time, as fgmoe's single-thread number (a shared machine's
        # other load then does not count against either).
        for _ in range(args.repeat + 1):  # the first pass warms the page cache and imports
            start = time.process_time()
            for image, mask, _ in items:
                pipeline(image, mask)
            seconds.append(time.process_time() - start)
    else:
        loader = torch.utils.data.DataLoader(Files(items, pipeline), batch_size=args.batch, shuffle=True,
                                             num_workers=args.threads, drop_last=True,
                                             persistent_workers=True)
        for _ in range(args.repeat + 1):
            start = time.perf_counter()
            n = 0
            for x, m, y in loader:
                n += x.shape[0]
            seconds.append(time.perf_counter() - start)
        items = items[: n]
    seconds = seconds[1:]
    median = sorted(seconds)[len(seconds) // 2]
    print(json.dumps({"images_per_second": len(items) / median, "seconds": seconds}))


if __name__ == "__main__":
    main()
