"""The price list parsers of infra/prices/refresh.py (scripts/refresh_prices.py).

The samples below are HAND-WRITTEN in the formats the providers document (AWS price list offer files,
Google's Cloud Billing Catalog `services.skus.list` reply, IBM's Global Catalog pricing reply), with
made-up SKU ids and prices. They are not recordings: none of those hosts is reachable from here, so what
they really return (Google's SKU descriptions above all) is to be checked the first time the script runs.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from infra.cost import parse_price_table
from infra.prices.refresh import (
    Found,
    parse_aws_offer,
    parse_google_skus,
    parse_ibm_pricing,
    refreshed_table,
    still_unknown,
)

REPO = Path(__file__).resolve().parents[2]
AWS_SOURCE = (
    "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonSageMaker/current/us-east-1/index.json"
)


def on_demand(sku: str, usd: str, unit: str = "Hrs") -> dict:
    return {
        f"{sku}.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF",
            "sku": sku,
            "priceDimensions": {
                f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                    "unit": unit,
                    "beginRange": "0",
                    "pricePerUnit": {"USD": usd},
                }
            },
        }
    }


def instance(sku: str, component: str, name: str, region: str = "us-east-1") -> dict:
    attributes = {"component": component, "instanceName": name, "regionCode": region}
    return {"sku": sku, "productFamily": "ML Instance", "attributes": attributes}


# Hand-written, in the AWS price list offer file format (formatVersion v1.0).
AWS_OFFER = {
    "formatVersion": "v1.0",
    "offerCode": "AmazonSageMaker",
    "publicationDate": "2026-12-01T00:00:00Z",
    "products": {
        "HOST1": instance("HOST1", "Hosting", "ml.m5.large"),
        "TRAIN1": instance("TRAIN1", "Training", "ml.m5.xlarge"),
        "NOTE1": instance("NOTE1", "Notebook", "ml.m5.large"),
        "OTHER": instance("OTHER", "Hosting", "ml.m5.large", region="eu-west-1"),
    },
    "terms": {
        "OnDemand": {
            **{"HOST1": on_demand("HOST1", "0.1150000000")},
            **{"TRAIN1": on_demand("TRAIN1", "0.2300000000")},
            **{"NOTE1": on_demand("NOTE1", "0.1150000000")},
            **{"OTHER": on_demand("OTHER", "0.1280000000")},
        }
    },
}


def google_sku(description: str, nanos: int, regions=("us-central1",), units: str = "0") -> dict:
    rate = {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos}}
    return {
        "name": f"services/C7E2-9256-1C43/skus/{abs(hash(description)) % 10**6}",
        "description": description,
        "serviceRegions": list(regions),
        "pricingInfo": [{"pricingExpression": {"usageUnit": "h", "tieredRates": [rate]}}],
    }


# Hand-written, in the Cloud Billing Catalog `skus` reply format; the descriptions are those another public
# price checker matches, not read from the API here.
AMERICAS = " running in Americas"
GOOGLE_SKUS = [
    google_sku("Vertex AI: Online/Batch Prediction N1 Predefined Instance Core" + AMERICAS, 31_000_000),
    google_sku("Vertex AI: Online/Batch Prediction N1 Predefined Instance Ram" + AMERICAS, 4_000_000),
    google_sku("Vertex AI: Training/Pipelines on N1 Predefined Instance Core" + AMERICAS, 36_000_000),
    google_sku("Vertex AI: Training/Pipelines on N1 Predefined Instance Ram" + AMERICAS, 5_000_000),
    google_sku("Vertex AI: Training/Pipelines Management fee on N1 Instance Core in Americas", 6_000_000),
    google_sku("Vertex AI: Training/Pipelines Management fee on N1 Instance RAM in Americas", 1_000_000),
    # A spot price holds the on-demand description inside its own; it must not price an on-demand machine.
    google_sku(
        "Spot Preemptible Vertex AI: Online/Batch Prediction N1 Predefined Instance Core" + AMERICAS, 9_000
    ),
    google_sku(
        "Vertex AI: Online/Batch Prediction N1 Predefined Instance Core running in EMEA",
        99,
        ("europe-west4",),
    ),
]

# Hand-written, in the Global Catalog `/pricing` reply format.
IBM_PRICING = {
    "deployment_id": "plan-id",
    "type": "paid",
    "metrics": [
        {
            "metric_id": "part-1",
            "charge_unit_name": "CAPACITY_UNIT_HOURS",
            "amounts": [
                {"country": "DEU", "currency": "EUR", "prices": [{"quantity_tier": 1, "price": 0.9}]},
                {"country": "USA", "currency": "USD", "prices": [{"quantity_tier": 1, "price": 0.5}]},
            ],
        }
    ],
}


def test_aws_offer_gives_hosting_and_training_prices_of_the_region_only():
    found = {(f.sku, f.price) for f in parse_aws_offer(AWS_OFFER, "us-east-1", AWS_SOURCE)}
    assert found == {("sagemaker-hosting:ml.m5.large", 0.115), ("sagemaker-training:ml.m5.xlarge", 0.23)}


def test_google_machine_price_is_its_cores_and_memory_and_training_adds_the_management_fee():
    found = {f.sku: f.price for f in parse_google_skus(GOOGLE_SKUS, "us-central1", "https://g")}
    assert found["vertex-prediction:n1-standard-2"] == pytest.approx(2 * 0.031 + 7.5 * 0.004)
    assert found["vertex-training:n1-standard-4"] == pytest.approx(4 * (0.036 + 0.006) + 15 * (0.005 + 0.001))


def test_google_gives_nothing_for_a_machine_whose_parts_are_not_all_priced():
    assert parse_google_skus(GOOGLE_SKUS[:1], "us-central1", "https://g") == []


def test_ibm_pricing_gives_the_capacity_unit_hour_in_usd():
    (found,) = parse_ibm_pricing(
        IBM_PRICING, "v2-standard", "https://globalcatalog.cloud.ibm.com/api/v1/plan-id/pricing"
    )
    assert (found.sku, found.price) == ("wml-cuh:v2-standard", 0.5)


def test_a_refreshed_table_dates_what_was_found_and_lists_the_rest_to_update_by_hand():
    original = (REPO / "infra" / "prices" / "ibm.csv").read_text()
    found = [
        Found("*", "wml-cuh:v2-standard", 0.5, "https://globalcatalog.cloud.ibm.com/api/v1/plan-id/pricing")
    ]
    text, by_hand = refreshed_table(original, found, date(2027, 1, 2))
    table = parse_price_table(text, "ibm")  # still a valid table
    row = table.find("us-south", "wml-cuh:v2-standard")
    assert row is not None
    assert (row.amount, row.read_on, row.source) == (0.5, date(2027, 1, 2), found[0].source)
    assert "wml-cuh:v2-standard" not in still_unknown(text)
    assert any(item.startswith("cos-standard (global") for item in by_hand)
    untouched = {r["sku"]: r for r in csv.DictReader(io.StringIO(original))}["wml-capacity:XS"]
    assert {r["sku"]: r for r in csv.DictReader(io.StringIO(text))}["wml-capacity:XS"] == untouched


def test_the_script_refreshes_from_a_saved_list_without_writing_unless_asked(tmp_path: Path):
    saved = tmp_path / "offer.json"
    saved.write_text(json.dumps(AWS_OFFER))
    before = (REPO / "infra" / "prices" / "aws.csv").read_text()
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "refresh_prices.py"), "--cloud", "aws", "--file", str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "found sagemaker-hosting:ml.m5.large (us-east-1): 0.115 USD" in run.stdout
    assert "update by hand: lambda-requests (us-east-1" in run.stdout
    assert (REPO / "infra" / "prices" / "aws.csv").read_text() == before


def test_the_script_says_google_needs_an_api_key():
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "refresh_prices.py"), "--cloud", "gcp"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0
    assert "needs an API key: export GOOGLE_BILLING_API_KEY" in run.stderr
