#!/usr/bin/env python3
"""Refresh infra/prices/<cloud>.csv from the provider's public price list, and say what to update by hand.

    scripts/refresh_prices.py --cloud aws [--region us-east-1]     # AWS price list offer files (no key)
    scripts/refresh_prices.py --cloud gcp [--region us-central1]   # Cloud Billing Catalog: needs an API key
        in GOOGLE_BILLING_API_KEY (console: APIs & Services > Credentials; enable the Cloud Billing API)
    scripts/refresh_prices.py --cloud ibm --plan <plan id>         # IBM Global Catalog pricing
    ... --file saved.json      # parse a price list saved earlier instead of fetching it
    ... --write                # write the table (otherwise only print what would change)

Every price found is written with today's date and the list it came from; every row the list did not give
is printed as "update by hand" (read the pricing page named in its source column, then set price and
read_on). tests/unit/test_cost.py fails when a row is older than 180 days.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.prices import refresh  # noqa: E402 (the project root first, as the script runs from a clone)

TABLES = ROOT / "infra" / "prices"
AWS_SERVICES = ("AmazonSageMaker", "AmazonS3")


def _get_json(url: str, params: dict[str, str] | None = None) -> dict:
    import requests

    response = requests.get(url, params=params, timeout=120)
    response.raise_for_status()
    return response.json()


def _found(args: argparse.Namespace) -> list[refresh.Found]:
    saved = json.loads(Path(args.file).read_text()) if args.file else None
    if args.cloud == "aws":
        found = []
        for service in AWS_SERVICES:
            url = refresh.AWS_OFFER_URL.format(service=service, region=args.region)
            found += refresh.parse_aws_offer(saved if saved is not None else _get_json(url), args.region, url)
        return found
    if args.cloud == "gcp":
        url = refresh.GOOGLE_SKUS_URL.format(service=refresh.VERTEX_SERVICE_ID)
        if saved is not None:
            skus = saved.get("skus", [])
        else:
            key = os.environ.get("GOOGLE_BILLING_API_KEY")
            if not key:
                raise SystemExit(
                    "the Cloud Billing Catalog API needs an API key: export GOOGLE_BILLING_API_KEY (a key of "
                    "a project with the Cloud Billing API enabled), or pass --file with a saved reply"
                )
            skus, token = [], ""
            while True:
                page = _get_json(
                    url, {"key": key, "currencyCode": "USD", "pageToken": token, "pageSize": "5000"}
                )
                skus += page.get("skus", [])
                token = page.get("nextPageToken", "")
                if not token:
                    break
        # The source never carries the key.
        return refresh.parse_google_skus(skus, args.region, url)
    if not args.plan:
        raise SystemExit(
            "--plan: the Global Catalog id of the watsonx.ai Runtime plan (ibmcloud catalog service pm-20)"
        )
    url = refresh.IBM_PRICING_URL.format(plan=args.plan)
    return refresh.parse_ibm_pricing(saved if saved is not None else _get_json(url), args.plan_name, url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh infra/prices/<cloud>.csv from a price list.")
    parser.add_argument("--cloud", choices=("aws", "gcp", "ibm"), required=True)
    parser.add_argument("--region", help="aws: us-east-1 (default); gcp: us-central1 (default)")
    parser.add_argument("--plan", help="ibm: the plan's Global Catalog id")
    parser.add_argument(
        "--plan-name", default="v2-standard", help="ibm: the plan's name in the table (sku wml-cuh:<name>)"
    )
    parser.add_argument("--file", help="a saved reply of the price list to parse instead of fetching it")
    parser.add_argument("--write", action="store_true", help="write infra/prices/<cloud>.csv")
    args = parser.parse_args(argv)
    args.region = args.region or {"aws": "us-east-1", "gcp": "us-central1", "ibm": "us-south"}[args.cloud]
    table = TABLES / f"{args.cloud}.csv"
    found = _found(args)
    text, by_hand = refresh.refreshed_table(table.read_text(), found, date.today())
    for item in found:
        print(f"found {item.sku} ({item.region}): {item.price:g} USD  <- {item.source}")
    for item in by_hand:
        print(f"update by hand: {item}")
    if args.write:
        table.write_text(text)
        print(f"wrote {table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
