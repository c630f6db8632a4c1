"""Refresh the price tables from the providers' public price lists (scripts/refresh_prices.py runs this).

- AWS: the price list offer files, public and keyless:
  https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/<service>/current/<region>/index.json
  (`products` by SKU with `productFamily` and `attributes`; `terms.OnDemand[sku][offer].priceDimensions`
  with `unit` and `pricePerUnit.USD`). SageMaker instances are `productFamily: "ML Instance"` with
  `attributes.component` `Hosting` or `Training` and `attributes.instanceName`; S3 Standard storage is
  `productFamily: "Storage"`, `volumeType: "Standard"`, first tier (`beginRange: "0"`).
- Google: the Cloud Billing Catalog API, which needs an API key:
  https://cloudbilling.googleapis.com/v1/services/<service id>/skus?key=<key>&currencyCode=USD
  (`skus[].description`, `serviceRegions`, `pricingInfo[0].pricingExpression.tieredRates[].unitPrice`
  as `units` + `nanos`). Vertex AI bills a machine type per vCPU-hour and per GiB-hour of memory, so a
  machine's hourly price is vCPUs x the core SKU + GiB x the RAM SKU.
- IBM: the Global Catalog pricing API, public for public plans:
  https://globalcatalog.cloud.ibm.com/api/v1/<plan id>/pricing
  (`metrics[].charge_unit_name`, `metrics[].amounts[]` per `country` with `currency` and
  `prices[].price` by `quantity_tier`).

None of these hosts is reachable from the machines this project is developed on, so the parsers are tested
on small samples written by hand in the documented formats (tests/unit/test_refresh_prices.py); the
descriptions matched for Google's SKUs are assumptions to check the first time the script runs with a key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from infra.cost import PRICE_COLUMNS, UNKNOWN

AWS_OFFER_URL = (
    "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/{service}/current/{region}/index.json"
)
GOOGLE_SKUS_URL = "https://cloudbilling.googleapis.com/v1/services/{service}/skus"
IBM_PRICING_URL = "https://globalcatalog.cloud.ibm.com/api/v1/{plan}/pricing"
# Vertex AI's service in the Cloud Billing Catalog ("Vertex AI", services/C7E2-9256-1C43).
VERTEX_SERVICE_ID = "C7E2-9256-1C43"
# vCPUs and GiB of memory of the N1 machine types the stack may use (Compute Engine's machine type table).
N1_MACHINES = {"n1-standard-2": (2, 7.5), "n1-standard-4": (4, 15.0), "n1-standard-8": (8, 30.0)}


@dataclass(frozen=True)
class Found:
    """A price read from a provider's list: `price` per the table's unit for (region, sku)."""

    region: str
    sku: str
    price: float
    source: str


def _on_demand_usd(terms: Mapping[str, Any], sku: str) -> float | None:
    for offer in (terms.get("OnDemand", {}).get(sku) or {}).values():
        for dimension in (offer.get("priceDimensions") or {}).values():
            usd = (dimension.get("pricePerUnit") or {}).get("USD")
            if usd is not None and dimension.get("beginRange", "0") == "0":
                return float(usd)
    return None


def parse_aws_offer(offer: Mapping[str, Any], region: str, source: str) -> list[Found]:
    """SageMaker hosting/training instance-hours and S3 Standard GB-months of `region` from an offer file."""
    found = []
    terms = offer.get("terms") or {}
    for sku, product in (offer.get("products") or {}).items():
        attributes = product.get("attributes") or {}
        if attributes.get("regionCode") not in (None, region):
            continue
        family = product.get("productFamily")
        if family == "ML Instance" and attributes.get("component") in ("Hosting", "Training"):
            kind = "sagemaker-hosting" if attributes["component"] == "Hosting" else "sagemaker-training"
            name = f"{kind}:{attributes.get('instanceName')}"
        elif family == "Storage" and attributes.get("volumeType") == "Standard":
            name = "s3-standard"
        else:
            continue
        price = _on_demand_usd(terms, sku)
        if price is not None:
            found.append(Found(region, name, price, source))
    return found


def _unit_price(sku: Mapping[str, Any]) -> float | None:
    for info in sku.get("pricingInfo") or []:
        for rate in (info.get("pricingExpression") or {}).get("tieredRates") or []:
            money = rate.get("unitPrice") or {}
            price = float(money.get("units") or 0) + float(money.get("nanos") or 0) / 1e9
            if price > 0:
                return price
    return None


def parse_google_skus(
    skus: Iterable[Mapping[str, Any]], region: str, source: str, kind: str = "Online/Batch Prediction"
) -> list[Found]:
    """Vertex AI N1 machine prices in `region`: `kind` is `Online/Batch Prediction` (serving, sku
    `vertex-prediction:<machine>`) or `Custom Training` (`vertex-training:<machine>`)."""
    core = ram = None
    for sku in skus:
        description = str(sku.get("description") or "")
        if (
            region not in (sku.get("serviceRegions") or [])
            or kind not in description
            or "N1" not in description
        ):
            continue
        if "Core" in description:
            core = _unit_price(sku)
        elif "Ram" in description or "RAM" in description:
            ram = _unit_price(sku)
    if core is None or ram is None:
        return []
    prefix = "vertex-prediction" if kind.startswith("Online") else "vertex-training"
    return [
        Found(region, f"{prefix}:{machine}", cpus * core + gib * ram, source)
        for machine, (cpus, gib) in N1_MACHINES.items()
    ]


def parse_ibm_pricing(
    pricing: Mapping[str, Any], plan: str, source: str, country: str = "USA"
) -> list[Found]:
    """The price of a capacity unit hour of a watsonx.ai Runtime plan (sku `wml-cuh:<plan>`)."""
    for metric in pricing.get("metrics") or []:
        if "CAPACITY_UNIT_HOUR" not in str(metric.get("charge_unit_name", "")).upper():
            continue
        for amount in metric.get("amounts") or []:
            if amount.get("country") != country or amount.get("currency") != "USD":
                continue
            prices = sorted(amount.get("prices") or [], key=lambda p: p.get("quantity_tier", 0))
            if prices:
                return [Found("*", f"wml-cuh:{plan}", float(prices[0]["price"]), source)]
    return []


def refreshed_table(text: str, found: Iterable[Found], today: date) -> tuple[str, list[str]]:
    """The table's CSV with every found price written in (dated `today`, sourced), and the SKUs still to
    update by hand (those the price lists did not give)."""
    by_key = {(f.region, f.sku): f for f in found}
    rows = list(csv.DictReader(io.StringIO(text)))
    by_hand = []
    for row in rows:
        hit = by_key.get((row["region"], row["sku"])) or by_key.get(("*", row["sku"]))
        if hit is None:
            by_hand.append(f"{row['sku']} ({row['region']}, read {row['read_on']}, price {row['price']})")
            continue
        row.update(
            price=f"{hit.price:g}",
            read_on=today.isoformat(),
            source=hit.source if hit.source.startswith("https://") else row["source"],
            note=f"refreshed from the provider's price list on {today.isoformat()}",
        )
    out = io.StringIO()
    columns: list[str] = list(PRICE_COLUMNS)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue(), by_hand


def still_unknown(text: str) -> list[str]:
    return [row["sku"] for row in csv.DictReader(io.StringIO(text)) if row["price"] == UNKNOWN]
