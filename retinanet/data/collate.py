"""Batching: pad a list of transformed samples into one image tensor."""
import torch

# Images are padded bottom/right to a multiple of 32 (the stride of C5), so the FPN's top-down
# x2 upsampling from P5 lands exactly on the P4 and P3 grids.
PAD_MULTIPLE = 32
# What a sample gives the loss; the last four only person-triplet samples have
# (retinanet.data.crowdhuman_people).
TARGET_KEYS = ("boxes", "labels", "ignore", "ignore_labels", "visible_boxes", "head_boxes", "visible_valid",
               "head_valid")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def collate_batch(samples: "list[dict]") -> "tuple[torch.Tensor, list[dict], list[dict]]":
    """Stack ``DetectionDataset`` samples into a batch.

    Returns:
        images: (B, 3, H, W), each image at the top-left and zero (the mean colour after
            normalisation) below and to the right; H and W are the largest height and width
            rounded up to a multiple of 32, with no extra padding when already a multiple.
        targets: per image dict(boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,)), and for
            person triplets visible_boxes (N, 4), head_boxes (N, 4), visible_valid (N,), head_valid (N,).
        metas: per image dict(scale, orig_size, image_size, path, index); image_size is the (h, w)
            of the unpadded network input, what boxes are clipped to.
    """
    if not samples:
        raise ValueError("collate_batch needs at least one sample")
    height = _round_up(max(sample["image"].shape[1] for sample in samples), PAD_MULTIPLE)
    width = _round_up(max(sample["image"].shape[2] for sample in samples), PAD_MULTIPLE)
    first = samples[0]["image"]
    images = first.new_zeros((len(samples), first.shape[0], height, width))
    for batch_index, sample in enumerate(samples):
        image = sample["image"]
        images[batch_index, :, : image.shape[1], : image.shape[2]] = image
    targets = [{key: sample[key] for key in TARGET_KEYS if key in sample} for sample in samples]
    metas = [
        {**{key: sample[key] for key in ("scale", "orig_size", "path", "index")},
         "image_size": tuple(sample["image"].shape[1:])}
        for sample in samples
    ]
    return images, targets, metas
