"""A multi-domain CTR generator whose best achievable AUC per domain is known.

Every row's click is drawn from a known probability ``p_true`` (kept as a column), so the
oracle AUC of each domain is the AUC of ``p_true`` on that domain's rows.

The click logit is  bias_d + shared(x) + group_g(d)(x) + domain_d(x):
- ids: per-user and per-item effects with Zipf-distributed ids (frequent ids are learnable,
  the long tail is not);
- a low-rank user_age x item_category interaction, shared + per group + per domain, which a
  model can only learn for a domain from that domain's (or its group's) rows;
- per-field effects of hour, device and gender, again shared + group + domain;
- a price slope per group.
Domains have geometric sizes (largest / smallest = ``size_ratio``); domain k belongs to group
k mod n_groups, so every group mixes large and small domains and small domains can borrow
from similar large ones. That is the setting in which AdaSparse claims its gains.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from adasparse_lab.data.schema import Schema
from adasparse_lab.errors import ConfigError

N_AGE, N_GENDER, N_HOUR, N_DEVICE = 8, 3, 24, 4


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the generator. Defaults give a run that trains in about a minute on 2 cores."""

    n_rows: int = 500_000
    n_domains: int = 12
    n_groups: int = 3
    size_ratio: float = 50.0
    n_users: int = 5_000
    n_items: int = 2_000
    n_categories: int = 40
    zipf_users: float = 1.05
    zipf_items: float = 1.1
    shared_scale: float = 1.0
    group_scale: float = 0.8
    domain_scale: float = 0.8
    id_scale: float = 0.15
    interaction_rank: int = 4
    seed: int = 0
    # 0: one draw of all rows (the stream every study so far has seen). > 0: rows drawn in
    # chunks of this many (generate_chunks), for tables larger than memory: a different
    # random stream (other rows for the same seed), same distribution.
    chunk_rows: int = 0

    def __post_init__(self) -> None:
        checks = {
            "n_rows": self.n_rows >= 100,
            "n_domains": self.n_domains >= 1,
            "n_groups": 1 <= self.n_groups <= self.n_domains,
            "size_ratio": self.size_ratio >= 1.0,
            "n_users": self.n_users >= 1,
            "n_items": self.n_items >= 1,
            "n_categories": self.n_categories >= 1,
            "chunk_rows": self.chunk_rows >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"data.synthetic.{key}={getattr(self, key)!r} is out of range")

    def domain_names(self) -> list[str]:
        return [f"d{k:02d}" for k in range(self.n_domains)]

    def domain_groups(self) -> dict[str, int]:
        return {name: k % self.n_groups for k, name in enumerate(self.domain_names())}

    def domain_shares(self) -> np.ndarray:
        """Expected share of rows per domain: geometric from 1 down to 1/size_ratio."""
        k = np.arange(self.n_domains)
        w = self.size_ratio ** (-k / max(self.n_domains - 1, 1))
        return w / w.sum()


SCHEMA = Schema(
    label="click",
    domain="domain",
    categorical=(
        "domain",
        "user_id",
        "item_id",
        "item_category",
        "user_age",
        "user_gender",
        "hour",
        "device",
    ),
    dense=("price", "user_activity"),
    user="user_id",
    extra=("p_true",),
)


def _zipf_ids(rng: np.random.Generator, n: int, vocab: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    cdf = np.cumsum(p / p.sum())
    ids = np.searchsorted(cdf, rng.random(n), side="right")
    # Shuffle id labels so that id order carries no signal.
    return rng.permutation(vocab)[np.minimum(ids, vocab - 1)].astype(np.int32)


def _effect(rng: np.random.Generator, spec: SyntheticSpec, size: tuple[int, ...]) -> tuple:
    """Shared, per-group and per-domain tables of one effect, already scaled."""
    return (
        spec.shared_scale * rng.normal(0.0, 1.0, size),
        spec.group_scale * rng.normal(0.0, 1.0, (spec.n_groups, *size)),
        spec.domain_scale * rng.normal(0.0, 1.0, (spec.n_domains, *size)),
    )


def _rows(
    rng, logit, domain, user, item, category, age, gender, hour, device, log_price, activity
) -> pl.DataFrame:
    """The generator's columns (``SCHEMA`` plus ``p_true``) from the rows' features, domain
    names and logit; the click is drawn from ``rng`` last, after everything else."""
    p_true = 1.0 / (1.0 + np.exp(-logit))
    click = (rng.random(len(p_true)) < p_true).astype(np.int8)
    return pl.DataFrame(
        {
            "click": click,
            "domain": domain,
            "user_id": user,
            "item_id": item,
            "item_category": category,
            "user_age": age,
            "user_gender": gender,
            "hour": hour,
            "device": device,
            "price": np.exp(log_price).astype(np.float32),
            "user_activity": activity,
            "p_true": p_true.astype(np.float64),
        }
    )


def generate(spec: SyntheticSpec) -> pl.DataFrame:
    """Draw ``spec.n_rows`` rows; columns follow ``SCHEMA`` plus ``p_true``. With
    ``spec.chunk_rows`` the chunks of ``generate_chunks`` concatenated."""
    if spec.chunk_rows:
        return pl.concat(list(generate_chunks(spec)))
    rng = np.random.default_rng(spec.seed)
    n, K = spec.n_rows, spec.n_domains
    group_of = np.arange(K) % spec.n_groups

    domain = rng.choice(K, size=n, p=spec.domain_shares()).astype(np.int32)
    group = group_of[domain]
    user = _zipf_ids(rng, n, spec.n_users, spec.zipf_users)
    item = _zipf_ids(rng, n, spec.n_items, spec.zipf_items)
    # Attributes are properties of the id, as in real logs.
    age = rng.integers(0, N_AGE, spec.n_users, dtype=np.int32)[user]
    gender = rng.integers(0, N_GENDER, spec.n_users, dtype=np.int32)[user]
    category = rng.integers(0, spec.n_categories, spec.n_items, dtype=np.int32)[item]
    activity_rate = rng.gamma(2.0, 2.0, spec.n_users)
    hour = rng.integers(0, N_HOUR, n, dtype=np.int32)
    device = rng.choice(N_DEVICE, size=n, p=[0.55, 0.3, 0.1, 0.05]).astype(np.int32)
    log_price = rng.normal(3.0, 1.0, spec.n_items)[item]
    activity = rng.poisson(activity_rate[user]).astype(np.float32)

    logit = rng.normal(-1.2, 0.4, K)[domain]
    logit += spec.id_scale * rng.normal(0.0, 1.0, spec.n_users)[user]
    logit += spec.id_scale * rng.normal(0.0, 1.0, spec.n_items)[item]
    # Low-rank age x category interaction: shared, per-group and per-domain weights on
    # rank-`interaction_rank` factors (learnable from enough rows, not from a few hundred).
    r = spec.interaction_rank
    age_f = rng.normal(0.0, 1.0, (N_AGE, r))[age]
    cat_f = rng.normal(0.0, 1.0, (spec.n_categories, r))[category]
    shared, per_group, per_domain = _effect(rng, spec, (r,))
    weights = shared[None, :] + per_group[group] + per_domain[domain]
    logit += 0.5 * (age_f * cat_f * weights).sum(1)
    for values, card in ((hour, N_HOUR), (device, N_DEVICE), (gender, N_GENDER)):
        shared, per_group, per_domain = _effect(rng, spec, (card,))
        logit += 0.3 * (shared[values] + per_group[group, values] + per_domain[domain, values])
    price_slope = rng.normal(-0.3, 0.3, spec.n_groups)
    logit += price_slope[group] * (log_price - 3.0)
    logit += 0.15 * np.log1p(activity)

    names = np.array(spec.domain_names())[domain]
    return _rows(
        rng, logit, names, user, item, category, age, gender, hour, device, log_price, activity
    )


# The chunked generator's streams: tables from [seed, _TABLES], chunk k's rows from
# [seed, _ROWS, k], so every chunk is drawn independently of the chunk size before it.
_TABLES, _ROWS = 0x7AB1E5, 0x2095


def _tables(spec: SyntheticSpec) -> dict:
    """Everything per id, domain and group that the chunked generator's rows look up."""
    rng = np.random.default_rng([spec.seed, _TABLES])
    K, r = spec.n_domains, spec.interaction_rank
    zipf = {}
    for name, vocab, exponent in (
        ("user", spec.n_users, spec.zipf_users),
        ("item", spec.n_items, spec.zipf_items),
    ):
        p = 1.0 / np.arange(1, vocab + 1) ** exponent
        zipf[name] = (np.cumsum(p / p.sum()), rng.permutation(vocab).astype(np.int32))
    return {
        "zipf": zipf,
        "age": rng.integers(0, N_AGE, spec.n_users, dtype=np.int32),
        "gender": rng.integers(0, N_GENDER, spec.n_users, dtype=np.int32),
        "category": rng.integers(0, spec.n_categories, spec.n_items, dtype=np.int32),
        "activity_rate": rng.gamma(2.0, 2.0, spec.n_users),
        "log_price": rng.normal(3.0, 1.0, spec.n_items),
        "bias": rng.normal(-1.2, 0.4, K),
        "user_effect": spec.id_scale * rng.normal(0.0, 1.0, spec.n_users),
        "item_effect": spec.id_scale * rng.normal(0.0, 1.0, spec.n_items),
        "age_f": rng.normal(0.0, 1.0, (N_AGE, r)),
        "cat_f": rng.normal(0.0, 1.0, (spec.n_categories, r)),
        "interaction": _effect(rng, spec, (r,)),
        "fields": [_effect(rng, spec, (card,)) for card in (N_HOUR, N_DEVICE, N_GENDER)],
        "price_slope": rng.normal(-0.3, 0.3, spec.n_groups),
    }


def _chunk(spec: SyntheticSpec, t: dict, rng: np.random.Generator, n: int) -> pl.DataFrame:
    """n rows of the chunked generator: the model of ``generate``, ids looked up in ``t``."""
    K = spec.n_domains
    domain = rng.choice(K, size=n, p=spec.domain_shares()).astype(np.int32)
    group = (np.arange(K) % spec.n_groups)[domain]
    ids = {}
    for name, (cdf, perm) in t["zipf"].items():
        drawn = np.searchsorted(cdf, rng.random(n), side="right")
        ids[name] = perm[np.minimum(drawn, len(perm) - 1)]
    user, item = ids["user"], ids["item"]
    age, gender, category = t["age"][user], t["gender"][user], t["category"][item]
    hour = rng.integers(0, N_HOUR, n, dtype=np.int32)
    device = rng.choice(N_DEVICE, size=n, p=[0.55, 0.3, 0.1, 0.05]).astype(np.int32)
    log_price = t["log_price"][item]
    activity = rng.poisson(t["activity_rate"][user]).astype(np.float32)
    logit = t["bias"][domain] + t["user_effect"][user] + t["item_effect"][item]
    shared, per_group, per_domain = t["interaction"]
    weights = shared[None, :] + per_group[group] + per_domain[domain]
    logit += 0.5 * (t["age_f"][age] * t["cat_f"][category] * weights).sum(1)
    for values, (shared, per_group, per_domain) in zip((hour, device, gender), t["fields"]):
        logit += 0.3 * (shared[values] + per_group[group, values] + per_domain[domain, values])
    logit += t["price_slope"][group] * (log_price - 3.0) + 0.15 * np.log1p(activity)
    # names looked up by polars: a numpy array of str would cost ~0.5 s a million rows
    names = pl.Series(domain).replace_strict(
        list(range(K)), spec.domain_names(), return_dtype=pl.String
    )
    return _rows(
        rng, logit, names, user, item, category, age, gender, hour, device, log_price, activity
    )


def generate_chunks(spec: SyntheticSpec) -> Iterator[pl.DataFrame]:
    """The rows in chunks of ``spec.chunk_rows`` (memory: one chunk); with chunk_rows=0 one
    chunk, ``generate(spec)``."""
    if not spec.chunk_rows:
        yield generate(spec)
        return
    tables = _tables(spec)
    for k, start in enumerate(range(0, spec.n_rows, spec.chunk_rows)):
        rng = np.random.default_rng([spec.seed, _ROWS, k])
        yield _chunk(spec, tables, rng, min(spec.chunk_rows, spec.n_rows - start))
