"""The smoke sweep as a person sees it: `mlflow ui` and headless Chromium (Debian's chromium-driver).

Reads the session's shared smoke sweep (tests/conftest.py::smoke_sweep); runs no sweep of its own.
"""

from __future__ import annotations

import pytest

from tests.browser import chromium, mlflow_ui, need_browser

WAIT_S = 180  # MLflow's React app on a loaded 2-core machine: bounded, generous


@pytest.fixture(scope="module")
def browser_on_sweep(smoke_sweep, tmp_path_factory):
    need_browser()
    assert smoke_sweep.proc.returncode == 0, smoke_sweep.proc.stdout[-3000:] + smoke_sweep.proc.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(smoke_sweep.uri)
    exp = client.get_experiment_by_name("paretorl")
    runs = client.search_runs([exp.experiment_id])
    work = tmp_path_factory.mktemp("browser")
    with mlflow_ui(smoke_sweep.uri, work / "mlflow-ui.log") as url, chromium(work / "profile") as driver:
        yield driver, url, exp, runs


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(condition, f"within {WAIT_S} s: {what}")


def test_the_experiment_opens_in_the_training_runs_view(browser_on_sweep):
    from selenium.webdriver.common.by import By

    from paretorl.report.mlflow_view import experiment_url

    driver, url, exp, runs = browser_on_sweep
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    driver.get(experiment_url(url, exp.experiment_id))  # the link the job prints
    wait(driver, lambda d: parent.info.run_name in d.find_element(By.TAG_NAME, "body").text, f"the sweep's parent run {parent.info.run_name!r} listed")
    assert "/runs" in driver.current_url and "workflowType=machine_learning" in driver.current_url
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "Model training" in body and "Evaluation runs" not in body  # the training view, not GenAI's
    # the trial runs are nested under the parent: open its row (the button in its name cell)
    parent_cell = driver.find_element(By.XPATH, f"//a[.//text()='{parent.info.run_name}']/ancestor::*[contains(@class, 'ag-cell-value')][1]")
    parent_cell.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
    children = [r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags]
    wait(driver, lambda d: all(name in d.find_element(By.TAG_NAME, "body").text for name in children), f"the trial runs {children} listed")


def test_the_interactive_front_draws_inside_mlflows_artifact_viewer(browser_on_sweep):
    from selenium.webdriver.common.by import By

    from paretorl.report.mlflow_view import run_url

    driver, url, exp, runs = browser_on_sweep
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    driver.get("about:blank")  # a fresh load: the app keeps an old iframe on a hash-only change
    driver.get(run_url(url, exp.experiment_id, parent.info.run_id, "artifacts/pareto_front.html"))
    frame = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "iframe.mlflow-html-iframe"), "the HTML artifact's iframe")
    assert frame.get_attribute("sandbox") == "allow-scripts"  # the opaque-origin sandbox the page must work in
    driver.switch_to.frame(frame)
    points = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "g.scatterlayer path.point"), "plotly's points drawn in the iframe")
    evaluated = 1 + 2  # the base policy and one evaluation per smoke trial
    assert len(points) >= evaluated
    size = driver.execute_script("const r = document.querySelector('.main-svg').getBoundingClientRect(); return [r.width, r.height, innerWidth, innerHeight]")
    driver.switch_to.default_content()
    width, height, frame_w, frame_h = size
    assert width == pytest.approx(frame_w, abs=2) and height == pytest.approx(frame_h, abs=2)  # sized to the pane
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "users/current" not in e["message"]]
    assert not errors, errors


def test_a_machine_without_the_browser_skips_with_the_reason_and_ci_fails(monkeypatch):
    import tests.browser as browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs /nonexistent/chromium.*scripts/install.sh"):
        browser.need_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs /nonexistent/chromium"):
        browser.need_browser()
