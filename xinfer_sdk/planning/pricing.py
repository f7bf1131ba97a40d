"""Prices of a profile: a user price per GPU-hour, or the sourced on-demand offers of its ``pricing`` section.

A user price (``price_per_hour_usd`` in a user profile, or ``plan --price NAME=USD``, which sets it) beats the
sourced one and is per GPU (one GPU per instance). A sourced offer is a whole instance: an 8-GPU node is bought
whole. ``price_for`` picks, among a profile's primary offers (the providers' own price tables, as copied into
``shared/reference/cloud-prices.yaml``), the one that runs the GPUs needed for the least per hour; an offer known
only from a third-party copy (``secondary: true``) is used only when asked for (``secondary=True``), to be shown
beside the bill, never billed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import UserError
from ..profiles import Profile


# -- prices ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Price:
    """What one GPU-hour and one instance-hour of a profile cost, and where the figure comes from."""

    usd_per_gpu_hour: float
    gpus_per_instance: int
    usd_per_instance_hour: float
    instance: str | None  # "aws g6.xlarge" for a sourced offer; None for a user price (per GPU)
    source: str
    secondary: bool = False  # the offer comes only from a third-party copy of the provider's prices

    def cost(self, gpus: int) -> tuple[float, int]:
        """(USD per hour, instances) to run ``gpus`` GPUs: whole instances, rounded up."""
        instances = math.ceil(gpus / self.gpus_per_instance)
        return instances * self.usd_per_instance_hour, instances

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _offer(offer: Mapping[str, Any]) -> Price:
    where = ", ".join(str(offer[k]) for k in ("region", "date") if offer.get(k))
    name = f"{offer['provider']} {offer['name']}"
    secondary = bool(offer.get("secondary"))
    return Price(float(offer["usd_per_hour"]) / int(offer["gpus"]), int(offer["gpus"]), float(offer["usd_per_hour"]),
                 name, f"on-demand {name}" + (f" ({where})" if where else "") + " from the profile's pricing section"
                 + ("; secondary source" if secondary else ""), secondary)


def price_of(profile: Profile) -> Price | None:
    """The profile's default price (None when it has none): a user price per GPU (``price_per_hour_usd``, which
    ``--price`` sets), else the sourced instance of its ``pricing`` section (the cheapest per GPU)."""
    per_gpu = profile.usd_per_gpu_hour
    if per_gpu is None:
        return None
    if profile.price_per_hour_usd is not None or not profile.pricing:
        return Price(per_gpu, 1, per_gpu, None, f"price_per_hour_usd of profile {profile.name} (user or --price)")
    return dataclasses.replace(_offer(profile.pricing["instance"]), usd_per_gpu_hour=per_gpu)


def price_for(profile: Profile, gpus: int, *, secondary: bool = False) -> Price | None:
    """The sourced offer that runs ``gpus`` GPUs for the least per hour in whole instances: one GPU wanted is
    cheaper on a 1-GPU instance than on the cheapest-per-GPU 8-GPU node. Only primary offers (the provider's own
    price tables) unless ``secondary``: a price known only from a third-party copy is shown as an alternative,
    never billed. Ties: the default instance, then the fewest idle GPUs. A user price has no instances."""
    default = price_of(profile)
    if default is None or default.instance is None:
        return default
    offers = [default] + [pr for pr in map(_offer, profile.pricing.get("offers") or ()) if secondary or not pr.secondary]
    return min(offers, key=lambda pr: (round(pr.cost(gpus)[0], 9), pr is not default,
                                       pr.cost(gpus)[1] * pr.gpus_per_instance))


def unpriced_reason(profile: Profile) -> str:
    """Why a profile has no price (short; ``PRICE_FIX`` says how to give it one)."""
    if profile.kind == "jetson":
        return "a Jetson module is bought, not rented by the hour"
    if profile.kind == "cpu":
        return f"the {profile.name} profile describes this host, not a cloud instance"
    return "no sourced on-demand price in the profile"


PRICE_FIX = "give --price NAME=USD_PER_GPU_HOUR (or price_per_hour_usd in a user profile) to rank it"


def hourly_cost(profile: Profile, gpus: int | None) -> float | None:
    """USD per hour to run ``gpus`` GPUs of ``profile`` in whole instances (None: no price or no count)."""
    price = price_of(profile) if gpus is None else price_for(profile, gpus)
    if price is None or gpus is None:
        return None
    return price.cost(gpus)[0]


def parse_prices(items: Iterable[str]) -> dict[str, float]:
    """``--price l4=0.70`` (repeatable, comma lists too) -> {"l4": 0.70}; USD per GPU-hour."""
    prices: dict[str, float] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            try:
                price = float(value)
            except ValueError:
                price = None
            if not sep or not name.strip() or price is None or not (0 <= price < math.inf):
                raise UserError(f"--price {part!r}: expected PROFILE=USD_PER_GPU_HOUR, e.g. --price l4=0.70")
            prices[name.strip()] = price
    return prices


def check_price_names(prices: Mapping[str, float], planned: Sequence[str], known: Sequence[str]) -> None:
    """Every --price names a profile that is planned; a typo or an unplanned profile is one clear error."""
    for name in prices:
        if name in planned:
            continue
        if name not in known:
            raise UserError(f"--price {name}=...: no profile named {name!r}",
                            hint=f"planned here: {', '.join(planned)}; see `xinfer-sdk profiles list`")
        raise UserError(f"--price {name}=...: {name!r} is not among the planned profiles ({', '.join(planned)})",
                        hint="add it to --profile, or drop the price")
