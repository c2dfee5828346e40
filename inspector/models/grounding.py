"""GroundingDINO wrapper, split into an image side, a text side and the caption-dependent rest.

GroundingDINO's own ``forward`` tokenises and encodes the caption, runs the Swin backbone and the
input projections, then the fusion transformer and the heads — all of it on every call. SAA's
reference code calls it once per caption, so the image backbone runs 5-10 times per image and the
BERT text encoder runs on every image. This wrapper splits the same computation (the same library
modules, in the same order) into:

* :meth:`GroundingModel.encode_text` — tokens, sub-sentence masks, BERT and ``feat_map``; it
  depends only on the captions, so a detector computes it once per profile;
* :meth:`GroundingModel.encode_image` — preprocessing, Swin backbone, positional encodings and
  input projections; it depends only on the image, so it runs once per image;
* :meth:`GroundingModel.predict` — the fusion encoder, decoder and heads, batched over caption
  rows (the image features are broadcast over the batch). This part mixes image and text from
  its first layer (bi-directional fusion), so it cannot be shared between captions.

:meth:`GroundingModel.forward_full` runs the library's unsplit ``forward`` (used by tests to prove
the split is exact and by ``bench/saa.py`` as the reference-style baseline).

Caption rows and entries: a *row* is one caption string given to the model; it holds one or more
*entries* (a profile prompt such as ``"broken part. contamination"``), each ending in ``"."``.
:class:`GroundingText` records each entry's token span, so callers can attribute a box to the
entry whose tokens it matches. Captions are normalised as GroundingDINO expects: lower case,
stripped, ending with ``"."``.

Building offline: GroundingDINO's constructor loads its tokenizer and BERT with
``from_pretrained(text_encoder_type)``; groundingdino-py accepts a local folder there, which the
model store provides (entry ``bert_base_uncased``). The real checkpoint then overwrites the BERT
weights with its fine-tuned ones.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inspector.imaging import resize_antialiased
from inspector.models.device import inference_autocast
from inspector.models.normalise import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER_KEY = "bert_base_uncased"
# checkpoint keys that may legitimately be absent from / extra to a GroundingDINO checkpoint
_IGNORABLE_KEYS = ("bert.embeddings.position_ids", "bert.pooler.")


def normalise_caption(text: str) -> str:
    """Lower case, strip, end with '.' (GroundingDINO's caption convention)."""
    text = text.lower().strip()
    return text if text.endswith(".") else text + "."


def resized_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """GroundingDINO's resize rule: shorter side to ``short`` unless the longer side exceeds ``max_size``."""
    lo, hi = float(min(h, w)), float(max(h, w))
    if max_size is not None and hi / lo * short > max_size:
        short = int(round(max_size * lo / hi))
    if w < h:
        return int(short * h / w), short
    return short, int(short * w / h)


def join_wordpieces(tokens: Sequence[str]) -> str:
    """Tokens (BERT word pieces) to text: ``["white", "cr", "##ack"] -> "white crack"``."""
    words: list[str] = []
    for tok in tokens:
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
        else:
            words.append(tok)
    return " ".join(words)


# --------------------------------------------------------------------------- data
@dataclass
class GroundingText:
    """Encoded caption rows (text side, computed once per profile)."""

    rows: list[str]  # caption strings as fed to the model
    tokens: list[list[str]]  # word pieces per row, [CLS] ... [SEP], unpadded
    entry_spans: list[list[tuple[int, int]]]  # per row: token [start, end) of each entry
    entry_ids: list[list[int]]  # per row: caller's index of each entry
    text_dict: dict[str, torch.Tensor] = field(repr=False)  # padded B×T tensors for the transformer

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def num_tokens(self) -> int:
        return int(self.text_dict["encoded_text"].shape[1])

    def select(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """A fresh text dict for a subset of rows (the transformer replaces entries of the dict it gets)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long, device=self.text_dict["encoded_text"].device)
        return {k: v.index_select(0, idx) for k, v in self.text_dict.items()}


@dataclass
class GroundingImage:
    """Image-side features of one image (computed once per image)."""

    srcs: list[torch.Tensor] = field(repr=False)  # per level 1×D×h×w (after input projection)
    masks: list[torch.Tensor] = field(repr=False)  # per level 1×h×w bool (padding)
    poss: list[torch.Tensor] = field(repr=False)  # per level 1×D×h×w positional encodings
    image_hw: tuple[int, int]  # original image size
    input_hw: tuple[int, int]  # size fed to the backbone


@dataclass
class GroundingPrediction:
    """Per caption row: token probabilities and boxes of every query."""

    logits: np.ndarray  # float32 B×Q×T, sigmoid token scores (T = text tokens of the rows, padded)
    boxes: np.ndarray  # float32 B×Q×4, (cx, cy, w, h) normalised to [0, 1]


# --------------------------------------------------------------------------- building
def config_path(arch: str) -> Path:
    """The GroundingDINO config shipped with groundingdino-py for an architecture name."""
    import groundingdino

    path = Path(groundingdino.__file__).parent / "config" / f"{arch}.py"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("GroundingDINO_*.py"))
        raise ValueError(f"unknown GroundingDINO architecture {arch!r}; groundingdino-py ships {', '.join(known)}")
    return path


def load_config(arch: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The library's SLConfig for ``arch`` with inference settings (no gradient checkpointing)."""
    from groundingdino.util.slconfig import SLConfig

    args = SLConfig.fromfile(str(config_path(arch)))
    args.use_checkpoint = False  # gradient checkpointing only matters for training
    args.use_transformer_ckpt = False
    for k, v in (overrides or {}).items():
        setattr(args, k, v)
    return args


def build_grounding_dino(args: Any, text_encoder_dir: str | os.PathLike[str]) -> torch.nn.Module:
    """Build GroundingDINO from config ``args`` with a local BERT folder (no network)."""
    from groundingdino.models import build_model

    folder = Path(text_encoder_dir)
    if not (folder / "config.json").is_file() or not (folder / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"{folder}: not a BERT folder (needs config.json and vocab.txt); "
            "install it with `inspector models import` (entry bert_base_uncased)"
        )
    args.text_encoder_type = str(folder)
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints the encoder path
        model = build_model(args)
    return model.eval()


# --------------------------------------------------------------------------- the wrapper
class GroundingModel:
    """A loaded GroundingDINO on one device, used through its image and text halves."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        key: str,
        short_side: int = 800,
        max_size: int | None = 1333,
    ) -> None:
        self.model = model.to(device).eval()
        self.device = device
        # fp16 autocast on CUDA (the library clamps its fusion attention for fp16). On CPU it runs in
        # fp32 even where the hub picks bf16: the two-stage query selection is a top-k over token
        # scores, and bf16 rounding changes which queries are selected (tiny model: token scores
        # moved by up to 0.98), i.e. which defects are found.
        self.dtype = dtype if device.type == "cuda" else torch.float32
        self.key = key
        self.short_side = short_side
        self.max_size = max_size
        self.tokenizer = model.tokenizer
        self.max_text_len = int(getattr(model, "max_text_len", 256))
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
        # counted for tests and benchmarks
        self.image_calls = 0
        self.text_calls = 0
        self.predict_rows = 0

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_module(cls, module: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                    key: str = "*") -> GroundingModel:
        return cls(module, device, dtype, key)

    @classmethod
    def from_store(cls, store: ModelStore, key: str, device: torch.device, dtype: torch.dtype) -> GroundingModel:
        entry = store.entry(key)
        options = dict(getattr(entry, "options", None) or {})
        text_key = str(options.get("text_encoder", DEFAULT_TEXT_ENCODER_KEY))
        text_dir = store.path(text_key)  # raises ModelMissingError naming the fix
        args = load_config(entry.arch, options.get("config"))
        model = build_grounding_dino(args, text_dir)
        state = store.load_state_dict(key)
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(_IGNORABLE_KEYS)]
        unexpected = [k for k in result.unexpected_keys if not k.startswith(_IGNORABLE_KEYS)]
        if missing:
            raise ValueError(
                f"model store entry {key!r}: checkpoint does not fit {entry.arch} "
                f"({len(missing)} missing tensors, e.g. {missing[:3]}); re-import the file"
            )
        if unexpected:
            log.warning("%s: %d checkpoint tensors unused (e.g. %s)", key, len(unexpected), unexpected[:3])
        return cls(model, device, dtype, key)

    # ----------------------------------------------------------------- text side
    def encode_text(self, rows: Sequence[Sequence[str]], entry_ids: Sequence[Sequence[int]] | None = None) -> GroundingText:
        """Encode caption rows; each row is a list of entries joined as ``"a. b."``.

        Returns the padded text features with the token span of every entry.
        """
        if not rows or any(not r for r in rows):
            raise ValueError("encode_text needs at least one non-empty caption row")
        ids_in = entry_ids if entry_ids is not None else [list(range(len(r))) for r in rows]
        captions, spans_all, tokens_all = [], [], []
        for row in rows:
            entries = [normalise_caption(e) for e in row]
            caption = " ".join(entries)
            tokens = self.tokenizer.tokenize(caption)
            spans, start = [], 1  # after [CLS]
            for e in entries:
                n = len(self.tokenizer.tokenize(e))
                spans.append((start, start + n))
                start += n
            if start - 1 != len(tokens):  # word pieces are context free for BERT; guard anyway
                raise ValueError(f"cannot split caption {caption!r} into its entries' tokens")
            if len(tokens) + 2 > self.max_text_len:
                raise ValueError(
                    f"caption {caption[:60]!r}... has {len(tokens) + 2} tokens; GroundingDINO reads at most "
                    f"{self.max_text_len}: use fewer or shorter prompts"
                )
            captions.append(caption)
            spans_all.append(spans)
            tokens_all.append(["[CLS]", *tokens, "[SEP]"])
        text_dict = self._text_features(captions)
        self.text_calls += 1
        return GroundingText(captions, tokens_all, spans_all, [list(i) for i in ids_in], text_dict)

    def _text_features(self, captions: list[str]) -> dict[str, torch.Tensor]:
        from groundingdino.models.GroundingDINO.bertwarper import (
            generate_masks_with_special_tokens_and_transfer_map,
        )

        m = self.model
        tokenized = self.tokenizer(captions, padding="longest", return_tensors="pt").to(self.device)
        self_attn, position_ids, _ = generate_masks_with_special_tokens_and_transfer_map(
            tokenized, m.specical_tokens, self.tokenizer
        )
        if m.sub_sentence_present:
            enc_in = {k: v for k, v in tokenized.items() if k != "attention_mask"}
            enc_in["attention_mask"] = self_attn
            enc_in["position_ids"] = position_ids
        else:
            enc_in = dict(tokenized)
        with inference_autocast(self.device, self.dtype):
            hidden = m.bert(**enc_in)["last_hidden_state"]
            encoded = m.feat_map(hidden)
        return {
            "encoded_text": encoded.float(),
            "text_token_mask": tokenized["attention_mask"].bool(),
            "position_ids": position_ids,
            "text_self_attention_masks": self_attn,
        }

    # ----------------------------------------------------------------- image side
    def preprocess(self, image: np.ndarray, short_side: int | None = None, max_size: int | None = None) -> torch.Tensor:
        """RGB uint8 HxWx3 -> normalised 3×h×w float tensor at GroundingDINO's input size.

        ``short_side``/``max_size`` default to the wrapper's (800 / 1333, GroundingDINO's own). The
        resize is the reference's (torchvision ``resize`` of a PIL image: antialiased bilinear).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"GroundingDINO expects RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        oh, ow = resized_hw(h, w, short_side or self.short_side, max_size or self.max_size)
        resized = resize_antialiased(image, (oh, ow), "bilinear")
        x = torch.as_tensor(np.ascontiguousarray(resized), device=self.device).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std

    def encode_image(self, image: np.ndarray, short_side: int | None = None,
                     max_size: int | None = None) -> GroundingImage:
        """Backbone, positional encodings and input projections of one image."""
        from groundingdino.util.misc import NestedTensor

        m = self.model
        x = self.preprocess(image, short_side, max_size)[None]
        pad = torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool, device=self.device)
        samples = NestedTensor(x, pad)
        with inference_autocast(self.device, self.dtype):
            features, poss = m.backbone(samples)
            srcs, masks = [], []
            for level, feat in enumerate(features):
                src, mask = feat.decompose()
                srcs.append(m.input_proj[level](src))
                masks.append(mask)
            for level in range(len(srcs), m.num_feature_levels):  # extra strided levels
                src = m.input_proj[level](features[-1].tensors if level == len(features) else srcs[-1])
                mask = torch.nn.functional.interpolate(pad[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
                poss.append(m.backbone[1](NestedTensor(src, mask)).to(src.dtype))
                srcs.append(src)
                masks.append(mask)
        self.image_calls += 1
        return GroundingImage(srcs, masks, list(poss), (int(image.shape[0]), int(image.shape[1])),
                              (int(x.shape[2]), int(x.shape[3])))

    # ----------------------------------------------------------------- fusion + heads
    def predict(self, image: GroundingImage, text: GroundingText, rows: Sequence[int] | None = None,
                batch: int | None = None) -> GroundingPrediction:
        """Fusion encoder, decoder and heads for caption ``rows`` (all by default), ``batch`` rows at a time.

        ``batch`` None picks 8 on CUDA and 1 on CPU: on CPU a batched pass costs more than the same
        rows one by one (bench: 6 rows at 800x800, 96-104 s batched vs 74-82 s sequential on one
        core), because its larger activations are page-faulted in afresh by the allocator.
        """
        rows = list(range(text.num_rows)) if rows is None else list(rows)
        if batch is None or batch < 1:
            batch = 8 if self.device.type == "cuda" else 1
        logits, boxes = [], []
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            lg, bx = self._predict_chunk(image, text.select(chunk))
            logits.append(lg)
            boxes.append(bx)
            self.predict_rows += len(chunk)
        t = text.num_tokens
        return GroundingPrediction(
            logits=np.concatenate([lg[..., :t] for lg in logits]).astype(np.float32),
            boxes=np.concatenate(boxes).astype(np.float32),
        )

    def _predict_chunk(self, image: GroundingImage, text_dict: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        from groundingdino.util.misc import inverse_sigmoid

        m = self.model
        b = int(text_dict["encoded_text"].shape[0])
        text_layers = getattr(m.transformer.encoder, "text_layers", None)
        if b > 1 and text_layers:
            # groundingdino's text-enhancer layer repeats a B×T×T mask head-major
            # (``mask.repeat(nhead, 1, 1)``) while nn.MultiheadAttention reads it batch-major, so
            # rows of a batch would get each other's sub-sentence masks. Hand it the B·nhead×T×T
            # mask in the right order; the layer then uses it as is (same result as B=1).
            nhead = int(text_layers[0].nhead)
            text_dict["text_self_attention_masks"] = text_dict["text_self_attention_masks"].repeat_interleave(
                nhead, dim=0)
        srcs = [s.expand(b, -1, -1, -1) for s in image.srcs]
        masks = [k.expand(b, -1, -1) for k in image.masks]
        poss = [p.expand(b, -1, -1, -1) for p in image.poss]
        with inference_autocast(self.device, self.dtype):
            hs, reference, _, _, _ = m.transformer(srcs, masks, None, poss, None, None, text_dict)
            # last decoder layer only: box delta on the layer's reference points, token scores
            coords = (m.bbox_embed[-1](hs[-1]) + inverse_sigmoid(reference[-2])).sigmoid()
            scores = m.class_embed[-1](hs[-1], text_dict).sigmoid()
        return scores.float().cpu().numpy(), coords.float().cpu().numpy()

    # ----------------------------------------------------------------- unsplit reference path
    def forward_full(self, image: np.ndarray, caption: str, short_side: int | None = None,
                     max_size: int | None = None) -> GroundingPrediction:
        """The library's own forward for one caption (backbone + BERT + transformer every call)."""
        x = self.preprocess(image, short_side, max_size)[None]
        with inference_autocast(self.device, self.dtype):
            out = self.model(x, captions=[normalise_caption(caption)])
        self.image_calls += 1
        self.text_calls += 1
        return GroundingPrediction(
            logits=out["pred_logits"].sigmoid().float().cpu().numpy(),
            boxes=out["pred_boxes"].float().cpu().numpy(),
        )
