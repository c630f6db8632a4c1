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
  as `units` + `nanos`). Vertex AI bills a machine type per vCPU-hour and per GiB-hour of memory (training
  adds a management fee on both), so a machine's hourly price is rebuilt from those SKUs (VERTEX_RECIPES).
- IBM: the Global Catalog pricing API, public for public plans:
  https://globalcatalog.cloud.ibm.com/api/v1/<plan id>/pricing
  (`metrics[].charge_unit_name`, `metrics[].amounts[]` per `country` with `currency` and
  `prices[].price` by `quantity_tier`).

None of these hosts is reachable from the machines this project is developed on, so the parsers are tested
on small samples written by hand in the documented formats (tests/unit/test_refresh_prices.py). The SKU
descriptions matched for Vertex AI are those another public price checker matches (found 2026-12-08), not
read from the API here: check them the first time the script runs with a key.
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


# Vertex AI bills a machine by its parts: (SKU description prefix, per vCPU or per GiB). Training adds a
# management fee per vCPU and GiB. The descriptions are matched from their start: "Spot Preemptible ..."
# SKUs contain the on-demand description and must not price an on-demand machine.
VERTEX_RECIPES = {
    "vertex-prediction": (
        ("Vertex AI: Online/Batch Prediction N1 Predefined Instance Core running in", "cpu"),
        ("Vertex AI: Online/Batch Prediction N1 Predefined Instance Ram running in", "ram"),
    ),
    "vertex-training": (
        ("Vertex AI: Training/Pipelines on N1 Predefined Instance Core running in", "cpu"),
        ("Vertex AI: Training/Pipelines on N1 Predefined Instance Ram running in", "ram"),
        ("Vertex AI: Training/Pipelines Management fee on N1 Instance Core in", "cpu"),
        ("Vertex AI: Training/Pipelines Management fee on N1 Instance RAM in", "ram"),
    ),
}


def parse_google_skus(skus: Iterable[Mapping[str, Any]], region: str, source: str) -> list[Found]:
    """Vertex AI N1 machine prices in `region`, prediction (sku `vertex-prediction:<machine>`) and training
    (`vertex-training:<machine>`): vCPUs x the per-core SKUs + GiB x the per-GiB SKUs. A recipe one of whose
    parts has no single SKU in the region gives nothing."""
    in_region = [sku for sku in skus if region in (sku.get("serviceRegions") or [])]
    found = []
    for prefix, recipe in VERTEX_RECIPES.items():
        per_cpu = per_gib = 0.0
        complete = True
        for description, unit in recipe:
            matches = [
                sku
                for sku in in_region
                if str(sku.get("description", "")).lower().startswith(description.lower())
            ]
            price = _unit_price(matches[0]) if len(matches) == 1 else None
            if price is None:
                complete = False
                break
            if unit == "cpu":
                per_cpu += price
            else:
                per_gib += price
        if complete:
            found += [
                Found(region, f"{prefix}:{machine}", cpus * per_cpu + gib * per_gib, source)
                for machine, (cpus, gib) in N1_MACHINES.items()
            ]
    return found


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
