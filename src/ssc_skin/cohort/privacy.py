"""Stable pseudonyms so that patient identifiers and user paths never leave in clear text.

Only `data/02_intermediate/*linkage.csv` (local, never logged) maps pseudonyms back.

- Patient ids become `pt-<hmac>`, images `im-<hmac>`, folders `dir-<hmac>`, paths in MLflow
  parameters `path-<hmac>`: keyed (HMAC-SHA256), stable for a key, not reversible.
- Quarantine reports never show any part of a user's file name (the rest of a name, e.g.
  `_JohnSmith_DOB19700101`, identifies as well as the id): a file shows as
  `pt-<hmac>_im-<hmac>.png` (its patient's pseudonym, when known, then the image's) and
  folders other than the label folder show a folder pseudonym (a folder may be a patient's).
  The local linkage file maps each shown name back to the relative path.
- Reasons are never rewritten word by word (a patient called `image` must not turn
  "not an image" into "not an pt-..."): only the paths they quote are replaced, by the same
  hidden path as in the `file` column, and ids inside quoted values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

PSEUDONYM_KEY_ENV = "SSC_SKIN_PSEUDONYM_KEY"
DEFAULT_PSEUDONYM_KEY = "ssc-skin-default-key"  # public: set your own secret in the env
# Parameters that hold a user's path, wherever they sit (dotted, as kedro-mlflow flattens).
PATH_PARAMS = (
    "cohort.source.root",
    "cohort.source.manifest",
    "predict.input",
    "predict.slide_manifest",
)
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def pseudonym(patient_id: str, key: str) -> str:
    """A keyed hash (HMAC-SHA256) of the identifier: stable for a key, not reversible.

    Undecodable file-name bytes (lone surrogates on POSIX) hash as the original bytes.
    """
    data = str(patient_id).encode("utf-8", "surrogateescape")
    digest = hmac.new(key.encode(), data, hashlib.sha256).hexdigest()
    return f"pt-{digest[:10]}"


def _tagged(value: str, key: str, prefix: str) -> str:
    return prefix + pseudonym(value, key)[3:]


def pseudonym_key() -> str:
    """The secret key for pseudonyms, from the environment (a public default otherwise)."""
    return os.environ.get(PSEUDONYM_KEY_ENV, DEFAULT_PSEUDONYM_KEY)


def _alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _replace_known(
    text: str,
    lookup: Callable[[str], str | None],
    lengths: set[int],
    starts: Callable[[str, int], bool],
    ends: Callable[[str, int], bool],
) -> str:
    """Left to right, replace the longest span at each allowed start that `lookup` knows.

    The same result as one regex alternation of every known text (longest first) with the
    `starts`/`ends` boundaries as look-arounds, in time linear in the number of known
    texts: a cohort of 200,000 files made that regex (and a substring test per path per
    reason) take hours.
    """
    if not lengths:
        return text
    size = len(text)
    allowed_ends = [e for e in range(1, size + 1) if ends(text, e)]
    out, done, start = [], 0, 0
    while start < size:
        match = None
        if starts(text, start):
            for end in reversed(allowed_ends):
                if end <= start:
                    break
                if end - start in lengths:
                    found = lookup(text[start:end])
                    if found is not None:
                        match = end, found
                        break
        if match is None:
            start += 1
            continue
        out += [text[done:start], match[1]]
        done = start = match[0]
    return "".join(out) + text[done:]


class _IdHider:
    """Replaces known patient ids (whole tokens, any letter case) by their pseudonyms."""

    def __init__(self, ids: Iterable[str], key: str) -> None:
        ids = [str(i) for i in ids if isinstance(i, str) and i.strip()]
        self.key = key
        self.canonical: dict[str, str] = {}
        for patient in sorted(set(ids)):
            self.canonical.setdefault(patient, patient)
            self.canonical.setdefault(patient.lower(), patient)
        self.lengths = {len(i) for i in self.canonical}

    def _find(self, text: str) -> str | None:
        return self.canonical.get(text, self.canonical.get(text.lower()))

    def __call__(self, text: str) -> str:
        return _replace_known(
            text,
            lambda span: (
                None if (found := self._find(span)) is None else pseudonym(found, self.key)
            ),
            self.lengths,
            lambda t, i: i == 0 or not _alnum(t[i - 1]),
            lambda t, i: i == len(t) or not _alnum(t[i]),
        )

    def is_id(self, text: str) -> bool:
        return self._find(text) is not None


def hide_patient_ids(texts: pd.Series, records: pd.DataFrame, key: str) -> pd.Series:
    """Replace every raw patient id (whole token, any case) inside texts by its pseudonym.

    For free text that holds only paths; reasons go through `hide_quarantine` instead.
    """
    hider = _IdHider(records["patient_id"].dropna(), key)
    return texts.astype(str).map(hider)


def hide_path(
    path: str, patient_id: str | None, hider: _IdHider, key: str, *, labels: Iterable[str] = ()
) -> str:
    """A report path with no id left in it (see the module docstring).

    `labels`: folder names that may stay as they are in first position (label folders).
    """
    *folders, name = path.split("/")
    shown = []
    for depth, folder in enumerate(folders):
        if depth == 0 and folder in set(labels) and not hider.is_id(folder):
            shown.append(folder)
        elif hider.is_id(folder):
            shown.append(hider(folder))
        else:
            shown.append(_tagged("/".join(folders[: depth + 1]), key, "dir-"))
    # The file name itself never shows, not even with its id replaced: the rest of a name
    # (`pt-…_JohnSmith_DOB19700101_white.png`, `MRN-4471-Smith` where the regex matched
    # only `MRN`) can identify a patient as well as the id. A known patient shows as its
    # pseudonym before the image's: `pt-<hmac>_im-<hmac>.png`.
    stem, extension = os.path.splitext(name)
    patient = (
        pseudonym(patient_id, key) + "_"
        if isinstance(patient_id, str) and patient_id.strip()
        else ""
    )
    shown.append(
        patient
        + _tagged(path, key, "im-")
        + (extension if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", extension) else "")
    )
    return "/".join(shown)


def hide_quarantine(
    quarantine: pd.DataFrame,
    records: pd.DataFrame,
    key: str,
    *,
    label_folders: bool = False,
    labels: Iterable[str] = (),
    show_names: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(report with no raw id, local linkage of shown file -> relative path).

    `records`: the discovery records (`relative_path`, `patient_id`, `mask_relative_path`);
    every patient id among them counts as known. `label_folders`: the first folder of a
    path is a label folder and stays readable when it is one of `labels`. `show_names`
    (the user's opt-in `cohort.privacy.show_file_names: true`): the report shows each file
    by its path relative to the cohort folder, and its reason as it is.
    """
    if show_names:
        linkage = pd.DataFrame(
            {
                "file": quarantine["file"],
                "relative_path": quarantine["file"],
                "check": quarantine["check"],
            }
        )
        return quarantine.copy(), linkage
    hider = _IdHider(records["patient_id"].dropna(), key)
    owner: dict[str, str | None] = {}
    for row in records.itertuples(index=False):
        owner.setdefault(row.relative_path, row.patient_id)
        if isinstance(row.mask_relative_path, str):
            owner.setdefault(row.mask_relative_path, row.patient_id)
    keep = tuple(labels) if label_folders else ()
    shown = {
        path: hide_path(path, owner.get(path), hider, key, labels=keep)
        for path in set(owner) | set(quarantine["file"])
    }
    files = quarantine["file"].map(shown)
    lengths = {len(p) for p in shown if p}
    hidden: dict[str, str] = {}  # most reasons repeat ("file missing"): hide each text once
    reasons = (
        quarantine["reason"]
        .astype(str)
        .map(
            lambda r: (
                hidden[r]
                if r in hidden
                else hidden.setdefault(r, _hide_reason(r, shown, hider, lengths))
            )
        )
    )
    unknown_label = quarantine["check"].eq("unknown_label")
    reasons[unknown_label] = reasons[unknown_label].map(lambda r: _hide_label(r, key))
    report = quarantine.assign(file=files, reason=reasons)
    linkage = pd.DataFrame(
        {"file": files, "relative_path": quarantine["file"], "check": quarantine["check"]}
    )
    return report, linkage


def _hide_label(reason: str, key: str) -> str:
    """An unknown label's quoted value (a label folder's or a manifest cell's text: it can be a
    patient's name) as `lbl-<hmac>`: rows with the same label share it, and the linkage file
    maps each row to its file."""
    return re.sub(r"'([^']*)'", lambda m: _tagged(m.group(1), key, "lbl-"), reason, count=1)


def _hide_reason(
    reason: str, shown: Mapping[str, str], hider: _IdHider, lengths: set[int] | None = None
) -> str:
    """Quoted paths and quoted values of a reason, hidden; its words left alone."""
    reason = _replace_known(
        reason,
        lambda span: shown.get(span) or None,
        {len(p) for p in shown if p} if lengths is None else lengths,
        lambda t, i: i == 0 or t[i - 1].isspace() or t[i - 1] in ",;:(",
        lambda t, i: i == len(t) or t[i].isspace() or t[i] in ",;)",
    )
    return re.sub(r"'([^']*)'", lambda m: "'" + hider(m.group(1)) + "'", reason)


def pseudonymise_records(records: pd.DataFrame, key: str) -> pd.DataFrame:
    """`image` and `patient` pseudonyms for validated records, the same in training and
    prediction (same key: same patient pseudonym); no patient id gives no patient pseudonym."""
    image = records["relative_path"].map(lambda p: _tagged(p, key, "im-"))
    patient = records["patient_id"].map(lambda p: pseudonym(p, key) if isinstance(p, str) else None)
    return records.assign(image=image, patient=patient)


def redact_params(params: Any, key: str, prefix: str = "") -> Any:
    """A copy of (nested or flattened) parameters with user paths replaced by `path-<hmac>`.

    Redacted: the keys in PATH_PARAMS (their value, whatever it is) and any text that looks
    like an absolute or home path. Project-relative paths (data/...) are left alone.
    """
    if isinstance(params, Mapping):
        return {
            name: redact_params(value, key, f"{prefix}{name}.") for name, value in params.items()
        }
    name = prefix[:-1]
    if (
        isinstance(params, str | os.PathLike)
        and str(params)
        and (
            any(name == p or name.endswith("." + p) for p in PATH_PARAMS)
            or _ABSOLUTE.match(str(params))
        )
    ):
        return _tagged(str(params), key, "path-")
    if isinstance(params, list | tuple):
        return type(params)(redact_params(v, key, prefix) for v in params)
    return params
