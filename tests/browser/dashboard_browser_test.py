#!/usr/bin/env python3
"""Browser tests of `uppzy-worker dashboard` (CTest label `browser`): real headless Chromium driven by
Selenium (Debian's chromium, chromium-driver and python3-selenium).

    dashboard_browser_test.py --worker-bin PATH --pg-url-file FILE [unittest options]
    dashboard_browser_test.py --worker-bin PATH --pg-url-file FILE --screenshot docs/dashboard.png

It creates a fresh database on the throwaway PostgreSQL whose admin URL is in FILE (the CTest fixture
`pg`), migrates it with `uppzy-worker migrate --with-roles`, creates a login with only the
uppzy_operator role, and starts two dashboards as that login: a read-only one and one with a token.
The tests:
  - load the overview and check its numbers against the views (psql), and that it refreshes itself;
  - filter to failed jobs, open one, see its error history; retry it and see it requeued in the
    database and on the page;
  - resolve an incident from the overview;
  - the read-only mode (banner on every page, disabled buttons, a POST refused) and the token login
    (redirect, wrong token, HttpOnly SameSite=Strict cookie, CSRF, sign-out);
  - escaping: a job whose job_key, metadata, last_error and history hold <script> and <img onerror>
    payloads: nothing runs, the text shows literally, and no Content-Security-Policy violation is
    even reported.
--screenshot runs a demo-like scene instead (uppzy-mock, a live worker, the demo's jobs, a day of
history) and saves the overview.

Exits 0 with a line starting "SKIP:" when Chromium, chromedriver or Selenium is not installed.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-test-token-0123456789"
XSS_SCRIPT = "<script>window.__x=1</script>"
XSS_IMG = '"><img src=x onerror="window.__x=1">'

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--worker-bin", required=True)
parser.add_argument("--pg-url-file", required=True)
parser.add_argument("--screenshot", help="take the README screenshot into this file instead of testing")
ARGS, UNITTEST_ARGS = parser.parse_known_args()


def skip(reason):
    print("SKIP: browser tests need " + reason)
    sys.exit(0)


if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    skip("chromium and chromium-driver (apt-get install chromium chromium-driver)")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    skip("python3-selenium (apt-get install python3-selenium)")


# ---- PostgreSQL -------------------------------------------------------------------------------------

def psql(url, sql):
    """Runs SQL with psql; returns the output (unaligned, tuples only)."""
    r = subprocess.run(["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("psql failed: " + r.stderr.strip() + "\n" + sql)
    return r.stdout.strip()


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


class Database:
    def __init__(self, admin_url):
        self.admin = admin_url
        self.name = "dash_browser_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
        self.login = self.name + "_op"
        psql(admin_url, "CREATE DATABASE " + self.name)
        base = admin_url.rsplit("/", 1)[0]
        self.url = base + "/" + self.name
        r = subprocess.run([ARGS.worker_bin, "migrate", "--with-roles"], env=dict(os.environ, DATABASE_URL=self.url),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("migrate failed: " + r.stdout + r.stderr)
        psql(admin_url, "CREATE ROLE %s LOGIN IN ROLE uppzy_operator" % self.login)
        # The dashboards connect as a login that has only the uppzy_operator role.
        self.operator_url = self.url.replace("://postgres@", "://%s@" % self.login, 1)

    def q(self, sql):
        return psql(self.url, sql)

    def drop(self):
        try:
            psql(self.admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)
            psql(self.admin, "DROP ROLE IF EXISTS " + self.login)
        except RuntimeError as e:
            print("cleanup: " + str(e), file=sys.stderr)


# ---- Processes --------------------------------------------------------------------------------------

class Proc:
    """A child process whose output goes to a log file; `port_key=` in the log gives its port."""

    def __init__(self, argv, env, port_key=None, port_file=None):
        self.log_path = tempfile.mktemp(prefix="uppzy-browser-", suffix=".log")
        self.log = open(self.log_path, "w")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("UPPZY_") and k != "DATABASE_URL"}
        clean.update(env)
        self.p = subprocess.Popen(argv, env=clean, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.port = None
        deadline = time.time() + 20
        while (port_key or port_file) and self.port is None:
            if port_key:
                with open(self.log_path) as f:
                    text = f.read()
                at = text.find(port_key + "=")
                if at >= 0:
                    digits = "".join(c for c in text[at + len(port_key) + 1:].split()[0] if c.isdigit())
                    self.port = int(digits) if digits else None
            elif os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                self.port = int(text) if text else None
            if self.p.poll() is not None or time.time() > deadline:
                with open(self.log_path) as f:
                    raise RuntimeError("%s did not start:\n%s" % (argv[0], f.read()))
            time.sleep(0.05)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        if not os.environ.get("UPPZY_TEST_KEEP_LOGS"):
            os.unlink(self.log_path)


def start_dashboard(url, token=None, extra_env=None):
    env = {"DATABASE_URL": url}
    if token:
        env["UPPZY_DASHBOARD_TOKEN"] = token
    env.update(extra_env or {})
    proc = Proc([ARGS.worker_bin, "dashboard", "--listen", "127.0.0.1:0"], env, port_key="http_port")
    proc.base = "http://127.0.0.1:%d" % proc.port
    return proc


# ---- Chromium ---------------------------------------------------------------------------------------

def new_browser(width=1400, height=1000):
    profile = tempfile.mkdtemp(prefix="uppzy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--user-data-dir=" + profile, "--window-size=%d,%d" % (width, height)]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(15)
    driver.uppzy_profile = profile
    return driver


def close_browser(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.uppzy_profile, ignore_errors=True)


def wait(driver, cond, timeout=10, message=""):
    # The pages rebuild their elements on every refresh: an element found a moment ago may be gone.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(
        lambda d: cond(d), message)


def text(driver, element_id):
    """textContent of an element, read in one script call (never a stale reference)."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : null;",
                                 element_id)


def events(driver):
    """[(kind, text)] of the error history timeline, read atomically."""
    return [tuple(e) for e in driver.execute_script(
        "return Array.from(document.querySelectorAll('#timeline li.event')).map(e => [e.dataset.kind, e.innerText]);")]


def by_id(driver, element_id):
    return driver.find_element(By.ID, element_id)


def fetch_post(driver, path, headers=None):
    """POSTs {} from the page's own JS (same origin, with its cookies); returns the HTTP status."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin', body: '{}',"
        " headers: Object.assign({'Content-Type': 'application/json'}, arguments[1])})"
        ".then(r => done(r.status)).catch(e => done(String(e)));", path, headers or {})


def login(driver, base, token=TOKEN):
    driver.get(base + "/login")
    by_id(driver, "token").send_keys(token)
    by_id(driver, "sign-in").click()


def csp_violations(driver):
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


# ---- The scene --------------------------------------------------------------------------------------

SEED_SQL = """
-- Finished in the last hour and the last day, with histories; some after a retry or a poll timeout.
INSERT INTO uppzy.chat_jobs (job_key, session_id, message, state, attempts, max_attempts, request_id, answer,
                             error_kind, last_error, last_http_status, errors, created_at, finished_at)
SELECT 'seed-' || i, 'sess-' || (i % 7), 'question ' || i,
       CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 17 = 0 THEN 'cancelled' ELSE 'completed' END,
       CASE WHEN i % 10 = 0 THEN 3 WHEN i % 17 = 0 THEN 1 WHEN i % 4 = 0 THEN 2 ELSE 1 END, 3, 'req_' || i,
       CASE WHEN i % 10 <> 0 AND i % 17 <> 0 THEN 'answer ' || i END,
       CASE WHEN i % 10 = 0 THEN (ARRAY['server_error', 'poll_timeout', 'upstream_failed'])[1 + i / 10 % 3]
            WHEN i % 17 = 0 THEN 'cancelled' END,
       CASE WHEN i % 10 = 0 THEN 'HTTP 503 from submit' WHEN i % 17 = 0 THEN 'cancelled by the app' END,
       CASE WHEN i % 10 = 0 THEN 503 END,
       CASE WHEN i % 10 = 0 THEN '[{"attempt": 1, "kind": "server_error", "http_status": 503, "message": "HTTP 503"}]'::jsonb
            WHEN i % 4 = 0 THEN '[{"attempt": 1, "kind": "poll_timeout", "message": "no answer in time"}]'::jsonb
            ELSE '[]'::jsonb END,
       now() - i * interval '7 minutes' - interval '40 seconds',
       now() - i * interval '7 minutes' - interval '40 seconds' + (5 + i % 30) * interval '1 second'
FROM generate_series(1, 180) i;
-- The job the history test opens: three failed attempts.
INSERT INTO uppzy.chat_jobs (job_key, session_id, message, state, attempts, max_attempts, error_kind, last_error,
                             last_http_status, errors, created_at, finished_at)
VALUES ('history-job', 'sess-h', 'where is my parcel', 'failed', 3, 3, 'server_error', 'HTTP 503 on attempt 3', 503,
        '[{"attempt": 1, "at": "2026-01-01T10:00:00.000Z", "kind": "server_error", "http_status": 503, "message": "HTTP 503 on attempt 1", "request_id": null},
          {"attempt": 2, "at": "2026-01-01T10:00:02.000Z", "kind": "server_error", "http_status": 503, "message": "HTTP 503 on attempt 2", "request_id": null},
          {"attempt": 3, "at": "2026-01-01T10:00:06.000Z", "kind": "server_error", "http_status": 503, "message": "HTTP 503 on attempt 3", "request_id": null}]',
        now() - interval '2 minutes', now() - interval '1 minute');
-- Waiting and in flight.
INSERT INTO uppzy.chat_jobs (session_id, message, created_at) SELECT 'sess-q', 'waiting', now() - i * interval '30 seconds'
FROM generate_series(1, 5) i;
INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, request_id, locked_by, lease_expires_at)
VALUES ('sess-p', 'in flight', 'polling', 1, 'req_p1', 'worker-a', now() + interval '30 seconds');
-- Workers: alive, gone (heartbeat older than its lease), stopped.
INSERT INTO uppzy.workers (id, host, pid, version, lease_ms, jobs_in_flight, breaker_state, heartbeat_at, stopped_at)
VALUES ('worker-a', 'host-a', 11, '0.1.0', 30000, 1, 'closed', now(), NULL),
       ('worker-b', 'host-b', 12, '0.1.0', 30000, 0, 'open', now(), NULL),
       ('worker-c', 'host-c', 13, '0.1.0', 5000, 0, 'closed', now() - interval '2 minutes', NULL),
       ('worker-d', 'host-d', 14, '0.1.0', 30000, 0, 'closed', now() - interval '10 minutes', now() - interval '10 minutes');
-- Ratings: delivered and failed.
INSERT INTO uppzy.chat_feedback (job_id, feedback, state, attempts, delivered_at, finished_at, created_at)
SELECT id, CASE WHEN id % 3 = 0 THEN 'bad' ELSE 'good' END, 'delivered', 1, finished_at, finished_at, finished_at
FROM uppzy.chat_jobs WHERE state = 'completed' ORDER BY id LIMIT 40;
INSERT INTO uppzy.chat_feedback (job_id, feedback, state, attempts, max_attempts, error_kind, finished_at, created_at)
SELECT id, 'good', 'failed', 1, 1, 'server_error', finished_at, finished_at
FROM uppzy.chat_jobs WHERE state = 'completed' ORDER BY id DESC LIMIT 3;
"""


class DashboardBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(ARGS.pg_url_file) as f:
            admin = f.read().strip()
        cls.db = Database(admin)
        cls.db.q(SEED_SQL)
        cls.incident = int(cls.db.q(
            "INSERT INTO uppzy.incidents (kind, http_status, detail, site_id, api_key_fingerprint, opened_by) "
            "VALUES ('forbidden', 403, 'HTTP 403 from POST /chat/async', 'site-1', '0123456789ab', 'worker-a') "
            "RETURNING id"))
        # A paused site whose reason is hostile operator input, and one job waiting for it.
        cls.db.q("INSERT INTO uppzy.sites (site_id, paused_at, paused_reason) VALUES ('site-paused', now(), %s); "
                 "INSERT INTO uppzy.chat_jobs (session_id, message, site_id) VALUES ('sess-site', 'm', 'site-paused')"
                 % sql_literal(XSS_IMG + XSS_SCRIPT))
        cls.history_job = int(cls.db.q("SELECT id FROM uppzy.chat_jobs WHERE job_key = 'history-job'"))
        cls.readonly = start_dashboard(cls.db.operator_url)
        cls.actions = start_dashboard(cls.db.operator_url, TOKEN)
        cls.browser = new_browser()

    @classmethod
    def tearDownClass(cls):
        for name in ("browser",):
            if hasattr(cls, name):
                close_browser(getattr(cls, name))
        for name in ("readonly", "actions"):
            if hasattr(cls, name):
                getattr(cls, name).stop()
        cls.db.drop()

    def setUp(self):
        self.b = self.browser
        self.b.delete_all_cookies() if self.b.current_url.startswith("http") else None

    # -- helpers --

    def signed_in(self):
        login(self.b, self.actions.base)
        wait(self.b, lambda d: d.current_url == self.actions.base + "/", message="login did not land on /")

    def value(self, element_id):
        return by_id(self.b, element_id).get_attribute("data-value")

    def assert_no_xss(self):
        self.assertEqual(self.b.execute_script("return typeof window.__x"), "undefined")
        self.assertEqual(csp_violations(self.b), [])

    # -- tests --

    def test_overview_numbers_match_the_database(self):
        self.b.get(self.readonly.base + "/")
        wait(self.b, lambda d: by_id(d, "updated").get_attribute("data-now"), message="overview never loaded")
        self.b.execute_script("window.__sameDocument = 1")

        def page_and_db():
            page, db = {}, {}
            for row in self.db.q("SELECT state, jobs FROM uppzy.chat_job_stats").splitlines():
                state, jobs = row.split("|")
                db["state." + state] = jobs
                page["state." + state] = self.value("state-%s-jobs" % state)
            fields = ["finished", "completed", "failed", "cancelled", "timeout_rate", "retry_rate", "p50_seconds",
                      "p95_seconds"]
            for key, period in (("1h", "1 hour"), ("24h", "24 hours")):
                row = self.db.q("SELECT %s FROM uppzy.chat_job_health WHERE period = '%s'" % (
                    ", ".join("coalesce(%s::text, '')" % f for f in fields), period)).split("|")
                for f, v in zip(fields, row):
                    db["health.%s.%s" % (key, f)] = float(v) if v else None
                    p = self.value("health-%s-%s" % (key, f))
                    page["health.%s.%s" % (key, f)] = float(p) if p else None
                kinds = json.loads(self.db.q(
                    "SELECT failures_by_kind FROM uppzy.chat_job_health WHERE period = '%s'" % period))
                db["kinds." + key] = {k: int(v) for k, v in kinds.items()}
                page["kinds." + key] = {a.get_attribute("data-kind"): int(a.get_attribute("data-value"))
                                        for a in by_id(self.b, "health-%s-failures" % key).find_elements(By.TAG_NAME, "a")}
            ffields = ["delivered", "failed", "good", "bad", "good_ratio", "pending"]
            for key, period in (("1h", "1 hour"), ("24h", "24 hours")):
                row = self.db.q("SELECT %s FROM uppzy.chat_feedback_health WHERE period = '%s'" % (
                    ", ".join("coalesce(%s::text, '')" % f for f in ffields), period)).split("|")
                for f, v in zip(ffields, row):
                    db["feedback.%s.%s" % (key, f)] = float(v) if v else None
                    p = self.value("feedback-%s-%s" % (key, f))
                    page["feedback.%s.%s" % (key, f)] = float(p) if p else None
            db["workers.alive"] = self.db.q(
                "SELECT count(*) FROM uppzy.workers WHERE stopped_at IS NULL "
                "AND heartbeat_at >= now() - lease_ms * interval '1 millisecond'")
            page["workers.alive"] = self.value("workers-alive")
            db["incidents"] = self.db.q("SELECT count(*) FROM uppzy.incidents WHERE resolved_at IS NULL")
            page["incidents"] = str(len(self.b.find_elements(By.CSS_SELECTOR, "#incidents .incident")))
            return page, db

        # The page refreshes itself; wait until one refresh agrees with the database.
        last = {}

        def agree(_):
            page, db = page_and_db()
            last["page"], last["db"] = page, db
            return page == db
        try:
            wait(self.b, agree, timeout=15)
        except Exception:
            self.assertEqual(last.get("page"), last.get("db"))
        self.assertEqual(last["page"]["state.failed"], self.db.q(
            "SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'failed'"))
        self.assertGreater(last["page"]["health.24h.finished"], 100)
        # The visible text says the same as the data.
        self.assertEqual(by_id(self.b, "state-queued-jobs").text, last["db"]["state.queued"])
        # Charts: bars of each outcome, drawn as SVG.
        for cls in ("bar-completed", "bar-failed", "bar-cancelled"):
            self.assertGreater(len(self.b.find_elements(By.CSS_SELECTOR, "#chart-finished rect." + cls)), 0, cls)
        self.assertGreater(len(self.b.find_elements(By.CSS_SELECTOR, "#chart-timeouts rect.bar-timeout")), 0)
        # The Sites panel: the paused site, its waiting job, not served, its reason shown as text.
        site = self.b.find_element(By.CSS_SELECTOR, "#sites tr[data-site-id='site-paused']")
        self.assertIn("site-paused", site.text)
        self.assertIn("no live worker holds its key: 1 waiting", site.text)
        self.assertIn(XSS_SCRIPT, site.find_element(By.CSS_SELECTOR, "td.site-paused").text)
        gone = self.b.find_element(By.CSS_SELECTOR, "#workers tr[data-worker-id='worker-c']")
        self.assertIn("gone", gone.text)
        # It refreshes without a reload: a new queued job appears.
        before = int(self.value("state-queued-jobs"))
        self.db.q("INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('sess-refresh', 'new')")
        wait(self.b, lambda d: int(self.value("state-queued-jobs")) == before + 1, timeout=15,
             message="the overview did not refresh itself")
        self.assertEqual(self.b.execute_script("return window.__sameDocument"), 1, "the page was reloaded")
        self.assert_no_xss()

    def test_failed_jobs_history_and_retry(self):
        self.signed_in()
        self.b.get(self.actions.base + "/jobs")
        wait(self.b, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job-id]"))
        Select(self.b.find_element(By.NAME, "state")).select_by_visible_text("failed")
        by_id(self.b, "apply-filters").click()
        wait(self.b, lambda d: "state=failed" in d.current_url and d.find_elements(
            By.CSS_SELECTOR, "#jobs tbody tr[data-job-id]"))
        rows = self.b.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job-id]")
        self.assertEqual(len(rows), int(self.db.q("SELECT least(count(*), 50) FROM uppzy.chat_jobs WHERE state = 'failed'")))
        for row in rows:
            self.assertEqual(row.find_element(By.CSS_SELECTOR, ".badge").text, "failed")
        self.b.find_element(By.CSS_SELECTOR, "tr[data-job-id='%d'] a.job-link" % self.history_job).click()
        wait(self.b, lambda d: len(events(d)) == 3, message="the error history did not show")
        history = events(self.b)
        self.assertEqual([k for k, _ in history], ["server_error"] * 3)
        self.assertIn("HTTP 503 on attempt 2", history[1][1])
        self.assertEqual(text(self.b, "field-state"), "failed")
        self.assertIn('"state" : "failed"', text(self.b, "notification"))

        by_id(self.b, "job-retry").click()
        wait(self.b, lambda d: text(d, "field-state") == "queued", message="the page did not show queued")
        self.assertEqual(self.db.q("SELECT state FROM uppzy.chat_jobs WHERE id = %d" % self.history_job), "queued")
        self.assertEqual(self.db.q("SELECT errors -> -1 ->> 'kind' FROM uppzy.chat_jobs WHERE id = %d"
                                   % self.history_job), "operator_retry")
        wait(self.b, lambda d: events(d)[-1][0] == "operator_retry", message="no operator event on the page")
        wait(self.b, lambda d: "Requeued" in (text(d, "action-result") or ""), message="no confirmation shown")
        self.assertTrue(self.b.find_elements(By.ID, "job-cancel"), "a queued job offers Cancel")
        self.assertFalse(self.b.find_elements(By.ID, "job-retry"), "a queued job offers no Retry")
        self.assert_no_xss()

    def test_resolve_an_incident_from_the_page(self):
        self.signed_in()
        wait(self.b, lambda d: d.find_elements(By.ID, "resolve-%d" % self.incident), message="no incident shown")
        box = by_id(self.b, "incidents")
        self.assertTrue(box.is_displayed())
        self.assertIn("HTTP 403 from POST /chat/async", box.text)
        by_id(self.b, "resolve-%d" % self.incident).click()
        wait(self.b, lambda d: not d.find_elements(By.ID, "resolve-%d" % self.incident),
             message="the incident stayed on the page")
        self.assertFalse(by_id(self.b, "incidents").is_displayed())
        self.assertIn("resolved", by_id(self.b, "overview-result").text)
        self.assertEqual(self.db.q("SELECT resolved_at IS NOT NULL FROM uppzy.incidents WHERE id = %d"
                                   % self.incident), "t")

    def test_read_only_mode(self):
        failed = int(self.db.q("SELECT id FROM uppzy.chat_jobs WHERE state = 'failed' ORDER BY id LIMIT 1"))
        for path in ("/", "/jobs", "/jobs/%d" % failed):
            self.b.get(self.readonly.base + path)
            banner = by_id(self.b, "mode-banner")
            self.assertTrue(banner.is_displayed(), path)
            self.assertIn("Read-only", banner.text, path)
        wait(self.b, lambda d: d.find_elements(By.ID, "job-retry"))
        self.assertFalse(by_id(self.b, "job-retry").is_enabled())
        self.b.get(self.readonly.base + "/jobs")
        wait(self.b, lambda d: d.find_elements(By.ID, "retry-selected"))
        for button in ("retry-selected", "cancel-selected", "retry-matching", "cancel-matching"):
            self.assertFalse(by_id(self.b, button).is_enabled(), button)
        self.assertEqual(fetch_post(self.b, "/api/jobs/%d/retry" % failed), 403)
        self.assertEqual(self.db.q("SELECT state FROM uppzy.chat_jobs WHERE id = %d" % failed), "failed")

    def test_token_login(self):
        base = self.actions.base
        self.b.get(base + "/")
        self.assertEqual(self.b.current_url, base + "/login")
        self.assertFalse(self.b.find_elements(By.ID, "mode-banner"))
        login(self.b, base, "not-the-right-token")
        wait(self.b, lambda d: d.find_elements(By.ID, "login-error"))
        self.assertIn("not right", by_id(self.b, "login-error").text)
        login(self.b, base)
        wait(self.b, lambda d: d.current_url == base + "/")
        wait(self.b, lambda d: by_id(d, "updated").get_attribute("data-now"))
        cookie = self.b.get_cookie("uppzy_dashboard_session")
        self.assertIsNotNone(cookie)
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        self.assertNotIn("uppzy_dashboard_session", self.b.execute_script("return document.cookie"))
        queued = int(self.db.q("SELECT id FROM uppzy.chat_jobs WHERE state = 'queued' ORDER BY id LIMIT 1"))
        self.assertEqual(fetch_post(self.b, "/api/jobs/%d/cancel" % queued), 403, "no CSRF token")
        self.assertEqual(fetch_post(self.b, "/api/jobs/%d/cancel" % queued, {"X-CSRF-Token": "0" * 64}), 403)
        self.assertEqual(self.db.q("SELECT state FROM uppzy.chat_jobs WHERE id = %d" % queued), "queued")
        by_id(self.b, "sign-out").click()
        wait(self.b, lambda d: d.current_url == base + "/login")
        self.b.get(base + "/jobs")
        self.assertEqual(self.b.current_url, base + "/login")

    def test_values_from_the_database_are_escaped(self):
        payload = XSS_SCRIPT + XSS_IMG
        job = int(self.db.q(
            "INSERT INTO uppzy.chat_jobs (job_key, session_id, message, metadata, state, attempts, error_kind, "
            "last_error, errors, finished_at) VALUES (%s, %s, 'm', %s, 'failed', 1, 'bad_request', %s, %s, now()) "
            "RETURNING id" % (
                sql_literal(payload), sql_literal("sess-" + XSS_IMG),
                sql_literal(json.dumps({"note": payload, XSS_IMG: XSS_SCRIPT})), sql_literal(payload),
                sql_literal(json.dumps([{"attempt": 1, "kind": XSS_SCRIPT, "http_status": 400, "message": payload,
                                         "request_id": XSS_IMG}])))))
        self.db.q("INSERT INTO uppzy.incidents (kind, http_status, detail, api_key_fingerprint, opened_by) VALUES "
                  "('unauthorized', 401, %s, 'fedcba987654', %s)" % (sql_literal(payload), sql_literal(XSS_IMG)))
        self.db.q("INSERT INTO uppzy.workers (id, host, pid, version, lease_ms) VALUES (%s, %s, 1, 'v', 30000)"
                  % (sql_literal("w" + XSS_SCRIPT), sql_literal(XSS_IMG)))
        base = self.readonly.base
        self.b.get(base + "/jobs?job_key=" + urllib.parse.quote(payload, safe=""))
        wait(self.b, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-job-id='%d']" % job))
        row = self.b.find_element(By.CSS_SELECTOR, "tr[data-job-id='%d']" % job)
        self.assertIn(payload, row.text)
        self.assertEqual(by_id(self.b, "jobs").find_elements(By.TAG_NAME, "img"), [])
        self.assert_no_xss()

        self.b.get(base + "/jobs/%d" % job)
        wait(self.b, lambda d: text(d, "field-job_key") == payload)
        self.assertEqual(text(self.b, "field-last_error"), payload)
        self.assertEqual(text(self.b, "field-session_id"), "sess-" + XSS_IMG)
        self.assertEqual(json.loads(text(self.b, "metadata")), {"note": payload, XSS_IMG: XSS_SCRIPT})
        history = events(self.b)
        self.assertEqual(history[0][0], XSS_SCRIPT)
        self.assertIn(payload, history[0][1])
        self.assertIn(payload.replace('"', '\\"'), text(self.b, "notification"))
        self.assertEqual(self.b.find_elements(By.CSS_SELECTOR, "main img, main script"), [])
        self.assert_no_xss()

        self.b.get(base + "/")
        wait(self.b, lambda d: payload in (text(d, "incidents") or ""))
        self.assertIn("w" + XSS_SCRIPT, text(self.b, "workers"))
        self.assertEqual(self.b.find_elements(By.CSS_SELECTOR, "main img, main script"), [])
        self.assert_no_xss()


# ---- The README screenshot --------------------------------------------------------------------------

DEMO_JOBS = [
    ("demo-ana", "What are your opening hours?"),
    ("demo-ana", "Do you ship to Canada?"),
    ("demo-ben", "How do I reset my password?"),
    ("demo-ben", "Can I change my order after paying?"),
    ("demo-cleo", "What is your refund policy?"),
    ("demo-dan", "Is there a student discount?"),
    ("demo-eve", "mock.submit=429,ok Which payment methods do you accept?"),
    ("demo-finn", "mock.submit=503,503,503 Where is my parcel?"),
    ("demo-gus", "mock.ready=6000 Summarise the whole catalogue"),
    ("demo-hana", "mock.fail=document_index_unavailable What does the warranty cover?"),
    ("demo-ivo", "mock.poll=processing,500,completed How long does delivery take?"),
    ("demo-jun", "mock.submit=400 This request is malformed"),
]

# A day of traffic before the demo: more by day than by night, a bad hour of poll timeouts, a few
# failures; so the charts have something to show.
HISTORY_SQL = """
INSERT INTO uppzy.chat_jobs (session_id, message, state, attempts, max_attempts, request_id, answer, error_kind,
                             last_error, errors, created_at, finished_at)
SELECT 'hist-' || (i % 300), 'earlier question', st, CASE WHEN st = 'failed' OR pt THEN 2 ELSE 1 END, 3,
       'req_h' || i, CASE WHEN st = 'completed' THEN 'earlier answer' END,
       CASE st WHEN 'failed' THEN CASE WHEN pt THEN 'poll_timeout' ELSE 'server_error' END
               WHEN 'cancelled' THEN 'cancelled' END,
       CASE st WHEN 'failed' THEN 'no answer in time' WHEN 'cancelled' THEN 'cancelled on request' END,
       CASE WHEN pt THEN '[{"attempt": 1, "kind": "poll_timeout", "message": "no answer within the poll timeout"}]'::jsonb
            ELSE '[]'::jsonb END,
       t - (3 + i % 20) * interval '1 second', t
FROM (
  SELECT i, t,
         extract(hour FROM t) = 14 AND i % 5 = 0 OR i % 61 = 0 AS pt,
         CASE WHEN i % 29 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'cancelled' ELSE 'completed' END AS st
  FROM (SELECT i, now() - interval '3 minutes' - (random() ^ 1.3) * interval '24 hours' AS t
        FROM generate_series(1, 9000) i) g
  WHERE random() < 0.55 + 0.45 * sin(extract(epoch FROM t) / 86400 * 2 * pi())
) s;
"""


def take_screenshot(path):
    with open(ARGS.pg_url_file) as f:
        admin = f.read().strip()
    db = Database(admin)
    procs = []
    browser = None
    try:
        db.q(HISTORY_SQL)
        bindir = os.path.dirname(os.path.abspath(ARGS.worker_bin))
        port_file = tempfile.mktemp(prefix="uppzy-mock-port-")
        mock = Proc([os.path.join(bindir, "uppzy-mock"), "--port", "0", "--port-file", port_file, "--api-key",
                     "demo-key", "--ready-after-ms", "1500"], {}, port_file=port_file)
        procs.append(mock)
        worker_env = {"DATABASE_URL": db.url, "UPPZY_BASE_URL": "http://127.0.0.1:%d/api/v1" % mock.port,
                      "UPPZY_SITE_ID": "demo-site", "UPPZY_API_KEY": "demo-key", "UPPZY_POLL_INTERVAL_MS": "250",
                      "UPPZY_POLL_TIMEOUT_MS": "4000", "UPPZY_BACKOFF_BASE_MS": "200", "UPPZY_BACKOFF_MAX_MS": "1000",
                      "UPPZY_HTTP_ADDR": "off", "UPPZY_WORKER_ID": "demo-worker-1"}
        for session, message in DEMO_JOBS:
            db.q("INSERT INTO uppzy.chat_jobs (session_id, message) VALUES (%s, %s)"
                 % (sql_literal(session), sql_literal(message)))
        procs.append(Proc([ARGS.worker_bin, "run"], worker_env))
        procs.append(Proc([ARGS.worker_bin, "run"], dict(worker_env, UPPZY_WORKER_ID="demo-worker-2")))
        deadline = time.time() + 60
        while time.time() < deadline and db.q(
                "SELECT count(*) FROM uppzy.chat_jobs WHERE state NOT IN ('completed', 'failed', 'cancelled')") != "0":
            time.sleep(0.5)
        db.q("SELECT uppzy.rate_job(id, CASE WHEN id % 4 = 0 THEN 'bad' ELSE 'good' END) FROM uppzy.chat_jobs "
             "WHERE state = 'completed' AND session_id LIKE 'demo-%'")
        # Work in progress for the picture: a few waiting and one being answered slowly.
        for i in range(4):
            db.q("INSERT INTO uppzy.chat_jobs (session_id, message) VALUES ('demo-kim', 'mock.ready=20000 Question %d')" % i)
        db.q("INSERT INTO uppzy.incidents (kind, http_status, detail, site_id, api_key_fingerprint, opened_by) VALUES "
             "('forbidden', 403, 'HTTP 403 from POST /m2m/sites/shop-eu/chat/async: plan does not include the API', "
             "'shop-eu', '9f2c41d07be3', 'eu-worker-1')")
        time.sleep(3)
        dash = start_dashboard(db.operator_url, TOKEN)
        procs.append(dash)
        browser = new_browser(1400, 1650)
        login(browser, dash.base)
        wait(browser, lambda d: d.current_url == dash.base + "/")
        wait(browser, lambda d: by_id(d, "updated").get_attribute("data-now"))
        time.sleep(1)
        browser.save_screenshot(path)
        print("saved " + path)
    finally:
        if browser:
            close_browser(browser)
        for p in reversed(procs):
            p.stop()
        db.drop()


if __name__ == "__main__":
    if ARGS.screenshot:
        take_screenshot(ARGS.screenshot)
    else:
        unittest.main(argv=[sys.argv[0]] + UNITTEST_ARGS, verbosity=2)
