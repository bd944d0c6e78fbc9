"""From raw head outputs to detections: top-k per level, score filter, decode, clip, NMS, per-image cap.

One implementation serves eager inference and the exported graph. The code is written so that
tracing keeps batch size and image size dynamic: sizes come from tensors, per-level work runs on
per-level tensors, and the per-image cap is a rank computed with tensor ops.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torchvision.ops import batched_nms

from retinanet.box_coder import BoxCoder, reference_boxes
from retinanet.boxes import batched_box_iou, clip_boxes

# A person-triplet model's boxes, in the order of its box deltas (model.PERSON_BOX_KINDS): each
# detection is one person, and its three boxes come back under these keys.
TRIPLET_BOX_KEYS = ("boxes", "visible_boxes", "head_boxes")

# NMS runs on each image's best CANDIDATES_PER_DETECTION * max_detections candidates only (more
# if they do not yield max_detections): greedy NMS keeps or drops a box by looking at higher-scoring
# boxes alone, so the best max_detections survivors never depend on lower-scoring candidates.
CANDIDATES_PER_DETECTION = 4

# paired_nms: a person's head for telling people apart is a head detection scoring over HEAD_SCORE
# (the default detection threshold: the low-scoring ones at evaluation settings cost time and are
# rarely anyone's best head) overlapping its regressed head at IoU > HEAD_MATCH_IOU. The greedy pass
# of paired_nms and set_nms settles PAIRED_BLOCK candidates of each image at a time.
HEAD_SCORE = 0.05
HEAD_MATCH_IOU = 0.3
PAIRED_BLOCK = 256


def level_topk(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best (anchor, class) entries of one pyramid level, per image.

    logits: (B, A_l, K). Returns top logits (B, k'), anchor index (B, k') in [0, A_l) and class
    index (B, k'), in no particular order; k' = min(k, A_l * K) in eager mode. Under tracing k' = k
    (a k' taken from the sample input would be frozen into the graph): the missing entries are
    padding with logit -inf, which no threshold passes.
    """
    batch_size, num_anchors, num_classes = logits.shape
    tracing = torch.jit.is_tracing()
    if tracing:
        last_anchor = torch._shape_as_tensor(logits)[1] - 1
        logits = torch.cat([logits, logits.new_full((batch_size, k, num_classes), float("-inf"))], dim=1)
    anchor_subset = None
    if tracing or (num_classes > 1 and num_anchors > k):
        # The k best entries lie on at most k anchors, each among the k anchors with the highest best
        # class (any anchor ranked lower has k entries above it), so top-k over k * K entries instead
        # of A_l * K: a max over classes is far cheaper than a top-k over all of them.
        anchor_subset = logits.amax(dim=2).topk(k, dim=1, sorted=False).indices  # (B, k)
        logits = logits.gather(1, anchor_subset[:, :, None].expand(-1, -1, num_classes))  # (B, k, K)
    flat_logits = logits.reshape(batch_size, -1)
    top_logits, top_flat = flat_logits.topk(k if tracing else min(k, flat_logits.shape[1]), dim=1, sorted=False)
    anchor_idx = top_flat // num_classes
    if anchor_subset is not None:
        anchor_idx = anchor_subset.gather(1, anchor_idx)
    if tracing:
        anchor_idx = torch.minimum(anchor_idx, last_anchor)  # padding points at a real anchor; never kept
    return top_logits, anchor_idx, top_flat % num_classes


def flat_detections(
    level_logits: Sequence[torch.Tensor],
    level_deltas: Sequence[torch.Tensor],
    level_anchors: Sequence[torch.Tensor],
    box_coder: BoxCoder,
    image_sizes: torch.Tensor,
    score_threshold: Union[float, torch.Tensor] = 0.05,
    topk_per_level: int = 1000,
    nms_iou_threshold: float = 0.5,
    max_detections: int = 300,
    candidates_per_detection: Optional[int] = CANDIDATES_PER_DETECTION,
    suppression_box: int = 0,
    boxes_per_anchor: int = 1,
    head_class: Optional[int] = None,
    paired: bool = False,
    instances_per_anchor: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections of a batch as one flat list, vectorised over images: one top-k per level, one NMS in all.

    level_logits: per level (B, A_l, K); level_deltas: per level (B, A_l, 4 S), S boxes per anchor
    (1, or 3 for a person-triplet model: full, visible, head); level_anchors: per level (A_l, 4).
    image_sizes: (B, 2) or (1, 2) float (h, w) of the network input to clip boxes to (the padded
    size reproduces the original project; the unpadded size is tighter).
    score_threshold: keep scores above it (a 0-dim tensor in an exported graph).
    candidates_per_detection: NMS looks at the best ``candidates_per_detection * max_detections``
    candidates per image, more when needed (exact, and faster); None runs NMS on all of them, with
    the same result, as a traced graph must (the "more when needed" is a data-dependent loop).
    boxes_per_anchor: S, a Python int (a traced shape would be frozen into the graph with a warning).
    suppression_box: which of the S boxes NMS compares (a triplet model's full-body boxes of two
    people standing one behind the other overlap; their heads need not).
    head_class: a triplet model's class of heads detected on their own (their box is box 0); each
    person's head box becomes the head detection it overlaps best (``attach_heads``).
    paired: a triplet model's NMS by ``paired_nms`` (suppression_box is then unused).
    instances_per_anchor: I, the rows of each anchor (I consecutive rows of level_logits and
    level_deltas, and I copies of the anchor in level_anchors); with I > 1 the detections of one
    anchor never remove each other (``set_nms``, or ``paired_nms`` told the anchors).
    Returns boxes (D, 4 S) x1y1x2y2 (box s in columns 4s..4s+3), scores (D,), labels (D,) int64 and
    batch_index (D,) int64, grouped by image, by descending score within an image, at most ``max_detections`` per image.
    """
    cand_logits, cand_labels, cand_deltas, cand_anchors, cand_sources = [], [], [], [], []
    first_row = 0
    for logits, deltas, anchors in zip(level_logits, level_deltas, level_anchors):
        top_logits, anchor_idx, labels = level_topk(logits, topk_per_level)
        cand_logits.append(top_logits)
        cand_labels.append(labels)
        cand_deltas.append(deltas.gather(1, anchor_idx[:, :, None].expand(-1, -1, 4 * boxes_per_anchor)))
        cand_anchors.append(anchors[anchor_idx])
        if instances_per_anchor > 1:  # which anchor of the pyramid each candidate comes from
            cand_sources.append((first_row + anchor_idx) // instances_per_anchor)
            first_row += logits.shape[1]
    # (B, N): every image has the same N candidates. sigmoid is taken of these few, not of all B*A*K.
    cand_scores = torch.sigmoid(torch.cat(cand_logits, dim=1).float())
    candidates = (cand_scores, torch.cat(cand_labels, dim=1), torch.cat(cand_deltas, dim=1),
                  torch.cat(cand_anchors, dim=1), torch.cat(cand_sources, dim=1) if cand_sources else None)
    batch_size, num_classes = level_logits[0].shape[0], level_logits[0].shape[2]
    image_sizes = image_sizes.expand(batch_size, 2)

    # the greedy pass over blocks (paired, Set NMS) would run again for each larger cut: it takes every candidate
    greedy = paired or instances_per_anchor > 1
    num_candidates = None if candidates_per_detection is None or greedy else candidates_per_detection * max_detections
    if num_candidates is not None:
        num_passing = (cand_scores > score_threshold).sum(dim=1)  # (B,)
    while True:
        image_idx, boxes, scores, labels = _nms(
            *candidates, num_candidates, score_threshold, box_coder, image_sizes, num_classes, nms_iou_threshold,
            suppression_box, boxes_per_anchor, head_class, paired)
        if num_candidates is None:
            break
        # An image short of max_detections whose candidates were cut may have lost survivors.
        kept_per_image = torch.bincount(image_idx, minlength=batch_size)
        if not ((kept_per_image < max_detections) & (num_passing > num_candidates)).any():
            break
        num_candidates *= 2

    # NMS returns detections by descending score, so a detection's rank within its image is the number
    # of earlier detections of the same image.
    same_image = (image_idx[:, None] == torch.arange(batch_size, device=image_idx.device)[None, :]).long()
    rank = ((same_image.cumsum(dim=0) - 1) * same_image).sum(dim=1)  # (D,)
    capped = torch.nonzero(rank < max_detections, as_tuple=True)[0]
    # Group by image with an exact integer key (image, rank): ONNX has no stable sort.
    capped = capped[torch.argsort(image_idx[capped] * max_detections + rank[capped])]
    boxes, scores, labels, image_idx = boxes[capped], scores[capped], labels[capped], image_idx[capped]
    if head_class is not None:
        boxes = attach_heads(boxes, scores, labels, image_idx, rank[capped], batch_size, max_detections, head_class)
    return boxes, scores, labels, image_idx


def attach_heads(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_idx: torch.Tensor,
    rank: torch.Tensor,
    batch_size: int,
    max_detections: int,
    head_class: int,
) -> torch.Tensor:
    """A triplet model's person detections get the head its head class detected.

    A head regressed from a full-body anchor is a rough guess (often half a head off, sometimes on
    the neighbour's head); the head class, trained on head-sized anchors, places heads as well as a
    plain model's. Each person's head box becomes the head detection of its image that maximises
    IoU(regressed head, head) x head score, when that IoU is above 0; otherwise it keeps its
    regressed head. A head detection's three boxes are its one box.

    boxes: (D, 12) full, visible, head (a head detection's box in columns 0-3); scores, labels,
    image_idx: (D,); rank: (D,) each detection's rank within its image, < max_detections (so the
    detections of an image fit in one padded (max_detections,) row). Returns boxes (D, 12).
    """
    is_head = labels == head_class
    boxes = torch.where(is_head[:, None], boxes[:, :4].repeat(1, 3), boxes)
    slot = image_idx * max_detections + rank  # unique per detection
    num_slots = batch_size * max_detections

    def padded(values: torch.Tensor) -> torch.Tensor:
        """(D, C) -> (B, max_detections, C): each image's detections in its row, zeros elsewhere."""
        rows = values.new_zeros(num_slots, values.shape[1]).index_put((slot,), values)
        return rows.reshape(batch_size, max_detections, values.shape[1])

    heads = padded(boxes[:, :4])  # (B, M, 4), a head detection's box
    head_scores = padded(torch.where(is_head, scores, torch.zeros_like(scores))[:, None])[..., 0]  # (B, M)
    overlap = batched_box_iou(padded(boxes[:, 8:]), heads)  # (B, M, M) regressed head vs head box
    best, best_idx = (overlap * head_scores[:, None, :]).max(dim=2)  # (B, M)
    best, best_idx = best.reshape(-1)[slot], best_idx.reshape(-1)[slot]  # (D,)
    snapped = heads.reshape(-1, 4)[image_idx * max_detections + best_idx]
    attach = ((best > 0) & ~is_head)[:, None]
    return torch.cat([boxes[:, :8], torch.where(attach, snapped, boxes[:, 8:])], dim=1)


def split_by_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_idx: torch.Tensor,
    batch_size: int,
    image_scales: Optional[Sequence[float]] = None,
) -> List[Dict[str, torch.Tensor]]:
    """Flat detections grouped by image (as ``flat_detections`` returns them) -> one dict per image:
    {"boxes": (D, 4), "scores", "labels"}, and for a triplet model's boxes (D, 12) also
    "visible_boxes" and "head_boxes" (``TRIPLET_BOX_KEYS``; "boxes" is the full body).

    image_scales: per image resize scale; boxes are divided by it.
    """
    if image_scales is not None:
        scales = torch.as_tensor(image_scales, dtype=boxes.dtype, device=boxes.device)
        boxes = boxes / scales[image_idx, None]
    counts = torch.bincount(image_idx, minlength=batch_size).tolist()
    keys = TRIPLET_BOX_KEYS if boxes.shape[1] == 4 * len(TRIPLET_BOX_KEYS) else TRIPLET_BOX_KEYS[:1]
    per_image = []
    for image_boxes, image_scores, image_labels in zip(boxes.split(counts), scores.split(counts), labels.split(counts)):
        detections = {key: image_boxes[:, 4 * s:4 * s + 4] for s, key in enumerate(keys)}
        detections.update(scores=image_scores, labels=image_labels)
        per_image.append(detections)
    return per_image


def _nms(
    cand_scores: torch.Tensor,
    cand_labels: torch.Tensor,
    cand_deltas: torch.Tensor,
    cand_anchors: torch.Tensor,
    cand_sources: Optional[torch.Tensor],
    num_candidates: Optional[int],
    score_threshold: Union[float, torch.Tensor],
    box_coder: BoxCoder,
    image_sizes: torch.Tensor,
    num_classes: int,
    nms_iou_threshold: float,
    suppression_box: int = 0,
    boxes_per_anchor: int = 1,
    head_class: Optional[int] = None,
    paired: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-aware NMS of each image's best ``num_candidates`` (all if None) candidates above the threshold.

    cand_scores, cand_labels: (B, N); cand_deltas: (B, N, 4 S); cand_anchors: (B, N, 4); cand_sources:
    (B, N) the anchor each candidate comes from, or None (one prediction per anchor); image_sizes:
    (B, 2) h, w. NMS compares box ``suppression_box`` of the S (box 0 of a ``head_class`` candidate,
    a head detected on its own), or with ``paired`` the rule of ``paired_nms``; candidates of one
    anchor never remove each other (Set NMS).
    Returns image index (D,), boxes
    (D, 4 S), scores (D,) and labels (D,) of the survivors, by descending score.
    """
    if num_candidates is not None and cand_scores.shape[1] > num_candidates:  # (never with sources: greedy)
        cand_scores, best = cand_scores.topk(num_candidates, dim=1, sorted=False)
        cand_labels = cand_labels.gather(1, best)
        cand_deltas = cand_deltas.gather(1, best[:, :, None].expand(-1, -1, 4 * boxes_per_anchor))
        cand_anchors = cand_anchors.gather(1, best[:, :, None].expand(-1, -1, 4))
    image_idx, column = torch.nonzero(cand_scores > score_threshold, as_tuple=True)
    scores = cand_scores[image_idx, column]
    labels = cand_labels[image_idx, column]
    deltas = cand_deltas[image_idx, column].float()
    # (D, S, 4): every box of a candidate decoded from its anchor's reference boxes, clipped to its image
    boxes = box_coder.decode(deltas.reshape(-1, boxes_per_anchor, 4),
                             reference_boxes(cand_anchors[image_idx, column], boxes_per_anchor))
    boxes = clip_boxes(boxes, image_sizes[image_idx, 0, None], image_sizes[image_idx, 1, None])
    sources = None if cand_sources is None else cand_sources[image_idx, column]
    if sources is not None and head_class is not None:
        # Heads stay apart even in a crowd: an anchor's two head detections at IoU > 0.5 are one head
        # twice, so each head is its own source (bench_crowd seed 0: head AP 0.968 -> 0.970).
        sources = torch.where(labels == head_class, -1 - torch.arange(len(labels), device=labels.device), sources)
    if paired:
        keep = paired_nms(boxes, scores, labels, image_idx, cand_scores.shape[0], nms_iou_threshold, head_class,
                          sources)
    else:
        compared = boxes[:, suppression_box]
        if head_class is not None and suppression_box != 0:
            compared = torch.where((labels == head_class)[:, None], boxes[:, 0], compared)
        if sources is None:
            # One NMS over the batch: each (image, class) pair is its own group.
            keep = batched_nms(_empty_if_inverted(compared), scores, image_idx * num_classes + labels,
                               nms_iou_threshold)
        else:
            keep = set_nms(compared, scores, labels, image_idx, sources, cand_scores.shape[0], nms_iou_threshold)
    boxes = boxes.reshape(-1, 4 * boxes_per_anchor)
    return image_idx[keep], boxes[keep], scores[keep], labels[keep]


def _empty_if_inverted(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes with x2 < x1 or y2 < y1 made empty (x2 = x1, y2 = y1).

    A box regressed outside the image clips to x2 < x1 = 0 or y2 < y1 = 0 (a triplet's head above the
    image, often). ONNX's NMS reads such a box's corners the other way round, torchvision's gives it
    a negative area and IoU 0: as an empty box it overlaps nothing in both.
    """
    return torch.cat([boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2])], dim=-1)


def paired_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_idx: torch.Tensor,
    num_images: int,
    iou_threshold: float,
    head_class: Optional[int] = None,
    sources: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Greedy NMS of person triplets that keeps two people apart by their heads and visible bodies.

    Two people standing one behind the other have full bodies overlapping at IoU > ``iou_threshold``,
    and full-body NMS keeps one of them; but their heads are different heads and their visible
    bodies overlap less (the paired-box idea of R²NMS), while a duplicate of a person shares its head
    or its visible body. So a person removes a lower-scoring one when their full bodies overlap at
    IoU > ``iou_threshold`` and they have the same head or their visible bodies overlap at IoU >
    ``iou_threshold``. With a ``head_class``, a person's head is the head detection scoring over
    ``HEAD_SCORE`` that its regressed head overlaps best (IoU x score, as ``attach_heads``), when
    they overlap at IoU > ``HEAD_MATCH_IOU`` (after head NMS two heads are the same head exactly when
    they overlap at IoU > ``iou_threshold``); without one it is its regressed head. A person with no
    head has the same head as everyone. Heads detected on their own go through NMS of their own.

    boxes: (D, 3, 4) full, visible, head of every candidate; scores, labels, image_idx: (D,), the
    images numbered below ``num_images``; sources: (D,) the anchor of each candidate, or None: two
    people of one anchor never remove each other (Set NMS; heads go through plain NMS). Returns (K,) indices of the
    survivors by descending score.
    """
    boxes = _empty_if_inverted(boxes)
    is_head = labels == head_class if head_class is not None else torch.zeros_like(labels, dtype=torch.bool)
    heads = torch.nonzero(is_head, as_tuple=True)[0]
    heads = heads[batched_nms(boxes[heads, 0], scores[heads], image_idx[heads], iou_threshold)]
    if head_class is not None:
        confident = _rows_by_image(heads[scores[heads] > HEAD_SCORE], scores, image_idx, num_images)
        head_boxes = boxes[confident.clamp(min=0), 0] * (confident >= 0)[..., None]  # (B, H, 4)
        head_scores = scores[confident.clamp(min=0)] * (confident >= 0)  # (B, H), 0 on padding

    def describe(block: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(full, visible, head, has_head[, source]) of the people in ``block`` (B, b), -1 padding."""
        valid = block >= 0
        full, visible, regressed = (boxes[block.clamp(min=0), s] * valid[..., None] for s in range(3))
        if head_class is not None:
            head, has_head = _snapped_heads(regressed, head_boxes, head_scores)
        else:
            head, has_head = regressed, valid
        people = (full, visible, head, has_head & valid)
        return people if sources is None else people + (sources[block.clamp(min=0)],)

    def removes(first: Tuple[torch.Tensor, ...], second: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        duplicate = _duplicates(first[:4], second[:4], iou_threshold)
        return duplicate if sources is None else duplicate & (first[4][:, :, None] != second[4][:, None, :])

    order = _rows_by_image(torch.nonzero(~is_head, as_tuple=True)[0], scores, image_idx, num_images)  # (B, N)
    survivors = torch.cat([heads, _greedy_by_blocks(order, describe, removes)])
    return survivors[scores[survivors].argsort(descending=True)]


def set_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_idx: torch.Tensor,
    sources: torch.Tensor,
    num_images: int,
    iou_threshold: float,
) -> torch.Tensor:
    """Class-aware greedy NMS in which detections of the same anchor never remove each other.

    The Set NMS of CrowdDet: an anchor trained to predict the two people it overlaps most
    (``losses.emd_targets``) gives two detections whose boxes overlap because the people do, so
    plain NMS would throw the second away; a duplicate from another anchor still goes.
    boxes: (D, 4) x1y1x2y2; scores, labels, image_idx: (D,), the images numbered below
    ``num_images``; sources: (D,) the anchor each detection comes from. Returns (K,) indices of the
    survivors by descending score.
    """
    boxes = _empty_if_inverted(boxes)

    def describe(block: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        index = block.clamp(min=0)
        return boxes[index] * (block >= 0)[..., None], labels[index], sources[index]

    def removes(first: Tuple[torch.Tensor, ...], second: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        return ((batched_box_iou(first[0], second[0]) > iou_threshold)
                & (first[1][:, :, None] == second[1][:, None, :]) & (first[2][:, :, None] != second[2][:, None, :]))

    order = _rows_by_image(torch.arange(len(scores), device=scores.device), scores, image_idx, num_images)
    survivors = _greedy_by_blocks(order, describe, removes)
    return survivors[scores[survivors].argsort(descending=True)]


def _greedy_by_blocks(
    order: torch.Tensor,
    describe: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]],
    removes: Callable[[Tuple[torch.Tensor, ...], Tuple[torch.Tensor, ...]], torch.Tensor],
) -> torch.Tensor:
    """Greedy NMS under any rule, all images at once: (K,) the kept candidates of ``order``, in no order.

    The pass runs over each image's candidates by descending score in blocks of ``PAIRED_BLOCK``:
    a block is checked against the candidates kept so far, then settled within itself by iterating
    "kept unless a kept one before it removes it" to its fixed point (the Cluster-NMS iteration),
    which is the greedy result.
    order: (B, N) candidate indices, each image's by descending score, -1 padding; describe: block
    (B, b) -> a tuple of (B, b) or (B, b, 4) tensors, what ``removes`` reads of each candidate;
    removes(first, second) -> (B, n, m) bool, candidate i of ``first`` removes candidate j of ``second``
    when i scores higher.
    """
    num_images = order.shape[0]
    kept_index = order.new_full((num_images, 0), -1)
    kept = None  # what describe gives of the candidates kept so far, each image a row
    for start in range(0, order.shape[1], PAIRED_BLOCK):
        block = order[:, start:start + PAIRED_BLOCK]
        valid = block >= 0
        candidates = describe(block)
        alive = valid
        if kept is not None:
            alive = valid & ~(removes(kept, candidates) & (kept_index >= 0)[..., None]).any(dim=1)
        within = removes(candidates, candidates).triu(diagonal=1)  # (B, b, b): i before j removes j
        keep = alive
        while True:
            settled = alive & ~(within & keep[..., None]).any(dim=1)
            if torch.equal(settled, keep):
                break
            keep = settled
        kept_index = torch.cat([kept_index, torch.where(keep, block, -1)], dim=1)
        kept = candidates if kept is None else tuple(torch.cat([old, new], dim=1) for old, new in zip(kept, candidates))
        # the kept candidates to the front of each row, the row as long as the most kept in an image
        front = (kept_index < 0).to(torch.int8).argsort(dim=1, stable=True)[:, :int((kept_index >= 0).sum(1).max())]
        kept_index = kept_index.gather(1, front)
        kept = tuple(value.gather(1, front[..., None].expand(-1, -1, 4)) if value.dim() == 3
                     else value.gather(1, front) for value in kept)
    return kept_index[kept_index >= 0]


def _rows_by_image(members: torch.Tensor, scores: torch.Tensor, image_idx: torch.Tensor,
                   num_images: int) -> torch.Tensor:
    """members (M,) candidate indices -> (B, N) of them, one row per image by descending score, -1 padding."""
    members = members[scores[members].argsort(descending=True)]
    members = members[image_idx[members].argsort(stable=True)]
    image = image_idx[members]
    counts = torch.bincount(image, minlength=num_images)
    first = torch.cumsum(counts, dim=0) - counts  # (B,) where each image's members start
    rank = torch.arange(len(members), device=members.device) - first[image]
    rows = members.new_full((num_images, int(counts.max()) if len(members) else 0), -1)
    rows[image, rank] = members
    return rows


def _snapped_heads(regressed: torch.Tensor, heads: torch.Tensor,
                   head_scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each person's head among its image's head detections (``paired_nms``).

    regressed: (B, P, 4) regressed heads; heads: (B, H, 4), head_scores: (B, H), 0 for padding.
    Returns heads (B, P, 4) and (B, P) bool, False where no head overlaps at IoU > HEAD_MATCH_IOU.
    """
    if heads.shape[1] == 0:
        return regressed, torch.zeros(regressed.shape[:2], dtype=torch.bool, device=regressed.device)
    iou = batched_box_iou(regressed, heads)  # (B, P, H)
    best, index = (iou * head_scores[:, None, :]).max(dim=2)
    matched = iou.gather(2, index[..., None])[..., 0] > HEAD_MATCH_IOU
    return heads.gather(1, index[..., None].expand(-1, -1, 4)), (best > 0) & matched


def _duplicates(first: Tuple[torch.Tensor, ...], second: Tuple[torch.Tensor, ...],
                iou_threshold: float) -> torch.Tensor:
    """(B, n, m) bool: person i of ``first`` removes person j of ``second`` (``paired_nms``'s rule).

    Each is (full (B, n, 4), visible (B, n, 4), head (B, n, 4), has_head (B, n) bool). The visible
    bodies and heads are compared only where the full bodies overlap: few pairs.
    """
    duplicate = batched_box_iou(first[0], second[0]) > iou_threshold
    image, i, j = torch.nonzero(duplicate, as_tuple=True)
    visible = _elementwise_iou(first[1][image, i], second[1][image, j]) > iou_threshold
    same_head = (_elementwise_iou(first[2][image, i], second[2][image, j]) > iou_threshold) \
        | ~first[3][image, i] | ~second[3][image, j]
    return duplicate.index_put((image, i, j), visible | same_head)


def _elementwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of each pair of rows: boxes1, boxes2 (P, 4) -> (P,)."""
    intersection = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    intersection = intersection.prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0).prod(dim=1)
    return intersection / (area1 + area2 - intersection).clamp(min=1e-6)
