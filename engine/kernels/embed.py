"""Embedding lookup (gather) and its backward (scatter-add), with optional positions.

Forward: ``out[b, l] = E[ids[b, l]] (+ P[l])``. Backward: ``dE[v] = Σ_{(b,l): ids[b,l]=v} g[b, l]``
(a token used twice gets both gradients) and ``dP[l] = Σ_b g[b, l]``. A position table with zero
rows means "no positions", which keeps one kernel signature for every mode.

The caller checks that every id lies in ``[0, vocab)``: the Numba kernels do not bounds-check.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import contiguous, kernel


def embed_fwd_np(ids: np.ndarray, table: np.ndarray, pos: np.ndarray, out: np.ndarray) -> None:
    out[:] = table[ids]
    if pos.shape[0]:
        out += pos[: ids.shape[1]]


@kernel(embed_fwd_np)
def embed_fwd(ids, table, pos, out):
    nb, nl = ids.shape
    d = table.shape[1]
    use_pos = pos.shape[0] > 0
    for b in range(nb):
        for l in range(nl):
            t = ids[b, l]
            if use_pos:
                for j in range(d):
                    out[b, l, j] = table[t, j] + pos[l, j]
            else:
                for j in range(d):
                    out[b, l, j] = table[t, j]


def embed_bwd_np(ids: np.ndarray, g: np.ndarray, dtable: np.ndarray, dpos: np.ndarray) -> None:
    d = g.shape[-1]
    dtable[:] = 0
    # np.add.at accumulates repeated ids (fancy-index += would keep only the last one).
    np.add.at(dtable, ids.reshape(-1), g.reshape(-1, d))
    if dpos.shape[0]:
        dpos[:] = 0
        dpos[: ids.shape[1]] = g.sum(axis=0)


@kernel(embed_bwd_np)
def embed_bwd(ids, g, dtable, dpos):
    nb, nl = ids.shape
    d = g.shape[2]
    # NOTE: loops, not ``dtable[:, :] = 0``: a slice-assignment costs seconds of first compile.
    for v in range(dtable.shape[0]):
        for j in range(d):
            dtable[v, j] = 0
    use_pos = dpos.shape[0] > 0
    for l in range(dpos.shape[0]):
        for j in range(d):
            dpos[l, j] = 0
    # NOTE: serial: two positions holding the same token add into the same row of dtable.
    for b in range(nb):
        for l in range(nl):
            t = ids[b, l]
            for j in range(d):
                dtable[t, j] += g[b, l, j]
                if use_pos:
                    dpos[l, j] += g[b, l, j]


def _no_pos(d: int, dtype: np.dtype) -> np.ndarray:
    return np.empty((0, d), dtype)


def embed(ids: np.ndarray, table: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """``table[ids] (+ pos[:L])`` for ``ids`` of shape (B, L); returns (B, L, d) in table's dtype."""
    ids = contiguous(ids, np.int64)
    table = contiguous(table)
    d = table.shape[1]
    pos = _no_pos(d, table.dtype) if pos is None else contiguous(pos, table.dtype)
    out = np.empty((*ids.shape, d), table.dtype)
    embed_fwd(ids, table, pos, out)
    return out


def embed_grad(ids: np.ndarray, g: np.ndarray, vocab: int, pos_rows: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dE, dP)``: ``dE`` (vocab, d) by scatter-add; ``dP`` (pos_rows, d), or None when 0 rows."""
    ids = contiguous(ids, np.int64)
    g = contiguous(g)
    d = g.shape[-1]
    dtable = np.empty((vocab, d), g.dtype)
    dpos = np.empty((pos_rows, d), g.dtype)
    embed_bwd(ids, g, dtable, dpos)
    return dtable, (dpos if pos_rows else None)
