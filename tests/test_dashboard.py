"""Admin usage review: this month's usage per key, CSV export of the filtered log, the dashboard."""

from __future__ import annotations

import csv
import io
import os
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from completions.dashboard import dashboard_data
from completions.keys import create_api_key
from completions.models import ModelRoute
from completions.recorder import LogWriter, RequestRecord
from completions.usage import rollup


def write(records: list[RequestRecord]) -> None:
    writer = LogWriter()
    writer.hooks.append(rollup)
    writer.write(records)


def sample(key_a: Any, key_b: Any, today: datetime) -> list[RequestRecord]:
    """Three days of traffic on two keys and two models, some errors."""
    out = []
    for day, n_a, n_b in ((2, 3, 1), (1, 5, 2), (0, 4, 0)):
        at = today - timedelta(days=day)
        for i in range(n_a):
            out.append(
                RequestRecord(
                    request_id=f"a-{day}-{i}",
                    created_at=at,
                    key_id=key_a.pk,
                    user_id=key_a.user_id,
                    model="alpha",
                    status_code=500 if i == 0 else 200,
                    prompt_tokens=100,
                    completion_tokens=50,
                    input_price=Decimal("2"),
                    output_price=Decimal("8"),
                    latency_ms=120 + i,
                )
            )
        for i in range(n_b):
            out.append(
                RequestRecord(
                    request_id=f"b-{day}-{i}",
                    created_at=at,
                    key_id=key_b.pk,
                    user_id=key_b.user_id,
                    model="beta",
                    prompt_tokens=10,
                    completion_tokens=10,
                    input_price=Decimal("1"),
                    output_price=Decimal("1"),
                    latency_ms=900,
                )
            )
    return out


@pytest.fixture
def traffic(django_user_model: Any) -> dict[str, Any]:
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    for name in ("alpha", "beta"):  # roll-ups are kept per model only for routed models
        ModelRoute.objects.create(model_name=name, provider="mock")
    key_a, _ = create_api_key(alice, "alice-key")
    key_b, _ = create_api_key(bob, "bob-key")
    today = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0).astimezone(UTC)
    write(sample(key_a, key_b, today))
    return {"key_a": key_a, "key_b": key_b, "today": today.date()}


@pytest.fixture
def staff(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    return client


@pytest.mark.django_db
def test_dashboard_data_matches_the_traffic(traffic: dict[str, Any]) -> None:
    today = traffic["today"]
    data = dashboard_data(today - timedelta(days=3), today)
    assert data["days"][-1] == today.isoformat() and len(data["days"]) == 4
    assert data["requests"] == [0, 4, 7, 4]
    assert data["errors"] == [0, 1, 1, 1]
    assert data["error_rate"] == [0, 25.0, round(100 / 7, 2), 25.0]
    assert data["prompt_tokens"] == [0, 310, 520, 400]
    assert data["cost"][3] == pytest.approx(4 * (100 * 2 + 50 * 8) / 1e6)
    assert [row["label"].split(" ")[0] for row in data["top_keys"]] == ["alice-key", "bob-key"]
    assert [row["label"] for row in data["top_models"]] == ["alpha", "beta"]
    assert data["totals"]["requests"] == 15 and data["totals"]["errors"] == 3
    assert data["latency"] == {50: 250, 90: 1000, 99: 1000}


@pytest.mark.django_db
def test_dashboard_page_and_key_usage_column(staff: Client, traffic: dict[str, Any]) -> None:
    page = staff.get("/admin/usage/?days=7")
    assert page.status_code == 200
    html = page.content.decode()
    assert "completions/vendor/chart.umd.min.js" in html and "cdn" not in html.lower()
    assert 'id="dashboard-data"' in html and "alice-key" in html
    assert Client().get("/admin/usage/").status_code == 302  # staff only: to the login page
    keys = staff.get("/admin/completions/apikey/").content.decode()
    # alice: 12 requests this month (if the three days fall in this month), shown beside the key
    month_start = traffic["today"].replace(day=1)
    expected = sum(n for d, n in ((2, 4), (1, 7), (0, 4)) if traffic["today"] - timedelta(days=d) >= month_start) - sum(
        n for d, n in ((2, 1), (1, 2)) if traffic["today"] - timedelta(days=d) >= month_start
    )
    assert f'<td class="field-month_requests">{expected}</td>' in keys


@pytest.mark.django_db
def test_csv_export_follows_the_changelist_filters(staff: Client, traffic: dict[str, Any]) -> None:
    response = staff.get("/admin/completions/requestlog/export/?model__exact=beta")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3 and {r["model"] for r in rows} == {"beta"}
    everything = staff.get("/admin/completions/requestlog/export/")
    assert len(list(csv.DictReader(io.StringIO(b"".join(everything.streaming_content).decode())))) == 15
    searched = staff.get("/admin/completions/requestlog/export/?q=a-1-2")
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(b"".join(searched.streaming_content).decode()))] == [
        "a-1-2"
    ]
    assert "Export CSV" in staff.get("/admin/completions/requestlog/").content.decode()


# ---- the browser test ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
need_browser = os.environ.get("GATEWAY_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not need_browser, reason="Chromium and chromedriver are not installed"
)
def test_browser_logs_in_and_sees_the_charts(gateway: Any, traffic: dict[str, Any], django_user_model: Any) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_superuser("admin", "a@example.com", "correct horse")
    today = traffic["today"]

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1200",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or "/usr/bin/chromedriver"), options=options)
    try:
        driver.get(gateway.url + "/admin/login/?next=/admin/")
        driver.find_element(By.NAME, "username").send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys("correct horse")
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "usage-dashboard-link"))
        driver.find_element(By.ID, "usage-dashboard-link").click()
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return document.body.dataset.chartsReady === 'true'")
        )
        charts = driver.execute_script(
            "const c = window.dashboardCharts; const out = {};"
            "for (const [name, chart] of Object.entries(c)) {"
            "  out[name] = {labels: chart.data.labels, data: chart.data.datasets.map(d => d.data),"
            "               drawn: chart.canvas.width > 0 && chart.chartArea.width > 0};"
            "} return out;"
        )
        assert set(charts) == {"requests", "tokens", "cost", "models"}
        assert all(chart["drawn"] for chart in charts.values())
        assert charts["requests"]["labels"][-1] == today.isoformat()
        assert charts["requests"]["data"][0][-3:] == [4, 7, 4]
        assert charts["requests"]["data"][1][-3:] == [25.0, round(100 / 7, 2), 25.0]
        assert charts["tokens"]["data"][0][-3:] == [310, 520, 400]
        assert charts["models"]["labels"] == ["alpha", "beta"]
        # The canvas really has pixels drawn on it (not a blank element).
        painted = driver.execute_script(
            "const cv = document.getElementById('chart-requests');"
            "const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;"
            "let n = 0; for (let i = 3; i < px.length; i += 4) { if (px[i] > 0) n++; } return n;"
        )
        assert painted > 1000
        assert "alice-key" in driver.find_element(By.ID, "top-keys").text
        assert driver.find_element(By.ID, "total-requests").text == "15"
        if os.environ.get("GATEWAY_SCREENSHOT"):
            driver.save_screenshot(os.environ["GATEWAY_SCREENSHOT"])
    except Exception:
        driver.save_screenshot("/tmp/dashboard-failure.png")
        print(driver.current_url, driver.page_source[:3000])
        raise
    finally:
        driver.quit()
