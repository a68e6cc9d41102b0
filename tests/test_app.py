"""The annotation app with its real parts: SQLite files, a uvicorn server on loopback, a kill -9
during writes, and headless Chromium driven through the three tasks by two annotators."""

import http.client
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from cnnjax.app import CATEGORIES, SCHEMA_VERSION, AnnotationStore, build_app  # noqa: E402
from cnnjax.app._store import _MIGRATIONS  # noqa: E402

K = 4  # images per unit


def make_project(root: Path, units=(0, 1, 2)) -> tuple[AnnotationStore, Path]:
    store = AnnotationStore(root / "annotations.sqlite")
    store.add_units("conv5", list(units), K)
    crops = root / "crops"
    rng = np.random.default_rng(0)
    for u in units:
        for r in range(K):
            (crops / "conv5" / str(u)).mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(
                crops / "conv5" / str(u) / f"{r}.png"
            )
    return store, crops


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, store, crops):
        self.port = free_port()
        config = uvicorn.Config(build_app(store, crops), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def project(tmp_path):
    store, crops = make_project(tmp_path)
    server = Server(store, crops)
    yield store, server
    server.stop()


def call(url, method="GET", body=None, token=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {
        "Content-Type": "application/json",
        **({"X-Annotator-Token": token} if token else {}),
        **(headers or {}),
    }
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sign_in(server, name):
    status, body = call(server.url + "/api/annotators", "POST", {"name": name})
    assert status == 200, body
    return json.loads(body)["token"]


def sign_in_when_up(server, name, timeout=60.0):
    """Sign in as soon as a server started in another process answers."""
    deadline = time.time() + timeout
    while True:
        try:
            return sign_in(server, name)
        except (urllib.error.URLError, ConnectionError):
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.1)


def answer(
    server, token, unit=0, description="stripes", category="texture or material", mismatches=(), request=None
):
    body = {"layer": "conv5", "unit": unit, "description": description, "category": category,
            "mismatches": list(mismatches), "request": request or uuid.uuid4().hex}  # fmt: skip
    return call(server.url + "/api/answers", "POST", body, token)


# -- the database ----------------------------------------------------------------------------------


def test_an_old_schema_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('application', 'cnnjax-annotate'), ('schema_version', '1')")
    db.execute("INSERT INTO units (layer, unit, images) VALUES ('conv5', 7, 4)")
    db.execute("INSERT INTO annotators (name, token, created) VALUES ('ann', 't', 0)")
    db.execute("INSERT INTO answers (annotator, unit, description, category, mismatches, created) "
               "VALUES (1, 1, 'sky', 'region or surface', '[1]', 0)")  # fmt: skip
    db.commit()
    db.close()
    store = AnnotationStore(path)
    assert store.schema_version() == SCHEMA_VERSION == 2
    assert [a["description"] for a in store.answers()] == ["sky"]
    assert store.results()["units"][0]["precision"] == 0.75


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda db: db.execute("CREATE TABLE photos (id INTEGER)"), "another tool"),
        (
            lambda db: (
                db.execute("CREATE TABLE meta (key TEXT, value TEXT)"),
                db.execute(
                    "INSERT INTO meta VALUES ('application', 'cnnjax-annotate'), ('schema_version', '9')"
                ),
            ),
            "schema version 9, newer",
        ),  # fmt: skip
    ],
)
def test_another_tools_or_a_newer_database_is_refused_and_left_alone(tmp_path, make, message):
    path = tmp_path / "x.sqlite"
    db = sqlite3.connect(path)
    make(db)
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        AnnotationStore(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a SQLite database"):
        AnnotationStore(path)
    assert path.read_text() == "hello"


def test_results_majority_label_precision_and_agreement(tmp_path):
    store, _ = make_project(tmp_path)
    a, b, c = (store.add_annotator(n)["id"] for n in ("ann", "bob", "cy"))
    unit = store.unit("conv5", 1)["id"]
    store.add_answer(a, unit, "Ocean ", "scene", [0])
    store.add_answer(b, unit, "ocean", "scene", [])
    store.add_answer(c, unit, "water", "region or surface", [0, 1, 2])
    store.add_answer(c, unit, "sea", "region or surface", [0, 1])  # c's latest answer counts
    row = store.results()["units"][0]
    assert (row["label"], row["category"], row["annotators"]) == ("ocean", "scene", 3)
    assert row["precision"] == pytest.approx(((1 - 1 / 4) + 1 + (1 - 2 / 4)) / 3, abs=1e-4)
    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert store.results()["types"] == {"conv5": {"scene": 1}}
    with pytest.raises(ValueError, match="category must be one of"):
        store.add_answer(a, unit, "x", "animal", [])
    with pytest.raises(ValueError, match="description"):
        store.add_answer(a, unit, "   ", "scene", [])


# -- the server ---------------------------------------------------------------------------------------


def test_hostile_labels_are_escaped_everywhere(project):
    store, server = project
    token = sign_in(server, '<img src=x onerror="alert(1)">')
    hostile = "<script>alert('x')</script>&\"'"
    assert answer(server, token, description=hostile)[0] == 200
    status, page = call(server.url + "/results")
    assert status == 200 and b"<script>alert" not in page and b"&lt;script&gt;alert(&#x27;x&#x27;)" in page
    status, page = call(server.url + "/")
    assert b"onerror" not in page
    assert json.loads(call(server.url + "/results.json")[1])["units"][0]["label"] == hostile.casefold()


@pytest.mark.parametrize(
    "path",
    [
        "/crops/../annotations.sqlite",
        "/crops/conv5/0/..%2F..%2Fannotations.sqlite",
        "/crops/%2e%2e/0/0.png",
        "/crops/conv5/9/0.png",
        "/crops/conv5/0/4.png",
        "/crops/conv5/0/-1.png",
        "/annotations.sqlite",
        "/crops/conv5/0/0.png/../../../annotations.sqlite",
    ],  # fmt: skip
)
def test_only_the_apps_own_files_and_registered_crops_are_served(project, path):
    _, server = project
    status, body = call(server.url + path)
    assert status == 404 and b"SQLite" not in body
    assert call(server.url + "/crops/conv5/0/3.png")[0] == 200


def test_bad_requests_get_a_4xx_and_store_nothing(project):
    store, server = project
    token = sign_in(server, "ann")
    url = server.url + "/api/answers"
    good = {"layer": "conv5", "unit": 0, "description": "dots", "category": "object", "mismatches": [1]}
    cases = [
        (call(url, "POST", {**good, "unit": 99}, token), 404),
        (call(url, "POST", {**good, "layer": "conv9"}, token), 404),
        (call(url, "POST", {**good, "category": "animal"}, token), 400),
        (call(url, "POST", {**good, "description": "  "}, token), 400),
        (call(url, "POST", {**good, "mismatches": [4]}, token), 400),
        (call(url, "POST", {**good, "mismatches": [1, 1]}, token), 400),
        (call(url, "POST", {**good, "unit": "0"}, token), 400),
        (call(url, "POST", good, "forged-token"), 401),
        (call(url, "POST", good), 401),
        (call(url, "POST", raw=b"{not json", token=token), 400),
        (call(url, "POST", raw=b"[1, 2]", token=token), 400),
        (call(url, "POST", {**good, "description": "x" * 20_000}, token), 413),
        (call(url, "POST", good, token, headers={"Content-Type": "text/plain"}), 415),
        (call(url, "POST", good, token, headers={"Origin": "http://evil.example"}), 403),
        (call(server.url + "/api/annotators", "POST", {"name": "ann"}), 400),  # the name is taken
        (call(url, "DELETE", good, token), 405),
    ]
    for (status, body), expected in cases:
        assert status == expected, (expected, body)
        assert "error" in json.loads(body)
    assert store.answers() == []
    assert answer(server, token)[0] == 200 and len(store.answers()) == 1


def test_800_answers_from_16_concurrent_clients_are_each_stored_once(tmp_path):
    store, crops = make_project(tmp_path, units=range(10))
    server = Server(store, crops)
    try:
        tokens = [sign_in(server, f"client {i}") for i in range(16)]
        sent: list[str] = []
        failures = []

        def client(i):
            for n in range(50):
                request = f"{i}-{n}"
                status, body = answer(server, tokens[i], unit=n % 10, description=f"label {n % 3}",
                                      mismatches=[n % K], request=request)  # fmt: skip
                if status != 200:
                    failures.append((status, body))
                if n % 10 == 0:  # a retried request: stored once
                    retry = answer(
                        server, tokens[i], unit=n % 10, description=f"label {n % 3}", request=request
                    )
                    assert json.loads(retry[1]) == {"stored": False}
                sent.append(request)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop()
    assert failures == []
    stored = [a["request"] for a in store.answers()]
    assert len(stored) == 800 and sorted(stored) == sorted(sent)


KILL_SERVER = """
import sys, uvicorn
from cnnjax.app import AnnotationStore, build_app
store = AnnotationStore(sys.argv[1])
uvicorn.run(build_app(store, sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]), log_level="error")
"""


def test_a_server_killed_during_writes_loses_no_acknowledged_answer(tmp_path):
    store, crops = make_project(tmp_path, units=range(5))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SERVER, str(store.path), str(crops), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server = type("S", (), {"url": url})()
    token = sign_in_when_up(server, "ann")
    acknowledged, stop = [], threading.Event()

    def client(i):
        n = 0
        while not stop.is_set():
            request = f"{i}-{n}"
            try:
                if answer(server, token, unit=n % 5, request=request)[0] == 200:
                    acknowledged.append(request)
            # The kill may cut a response after its headers (IncompleteRead): not an acknowledgement.
            except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException):
                return
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) > 20
    reopened = AnnotationStore(store.path)
    with reopened.connection() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {a["request"] for a in reopened.answers()}
    assert set(acknowledged) <= stored  # every acknowledged answer survived
    assert all(a["description"] == "stripes" and a["category"] for a in reopened.answers())


# -- a real browser through the three tasks -----------------------------------------------------


def _chromedriver():
    return shutil.which("chromedriver")


_NO_DRIVER = "chromium-driver not installed (apt-get install chromium-driver)"


@pytest.mark.skipif(_chromedriver() is None, reason=_NO_DRIVER)
def test_two_annotators_do_the_three_tasks_in_headless_chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store, crops = make_project(tmp_path, units=(0, 1))
    server = Server(store, crops)

    def annotate(driver, wait, unit, description, clicks, category):
        wait.until(lambda d: d.find_element(By.ID, "unit").text == f"conv5 {unit}")
        wait.until(lambda d: d.execute_script("return document.getElementById('image-3').naturalWidth") > 0)
        driver.find_element(By.ID, "description").send_keys(description)  # task 1
        for rank in clicks:  # task 2
            driver.find_element(By.ID, f"image-{rank}").click()
        driver.find_element(By.CSS_SELECTOR, f"input[value='{category}']").click()  # task 3
        driver.find_element(By.ID, "submit").click()

    # ann does unit 0; bob is then given unit 1 first (nobody has done it), then unit 0.
    plans = {
        "ann": [(0, "red stripes", [1, 3], "texture or material")],
        "bob": [(1, "a disc", [], "object"), (0, "Red  stripes", [3], "texture or material")],
    }
    try:
        for name, units in plans.items():
            options = webdriver.ChromeOptions()
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service(_chromedriver()), options=options)
            try:
                wait = WebDriverWait(driver, 20)
                driver.get(server.url + "/")
                driver.find_element(By.ID, "name").send_keys(name)
                driver.find_element(By.ID, "start").click()
                for plan in units:
                    annotate(driver, wait, *plan)
                done = f"{len(units)} of 2 units done"  # (textContent: the task may be hidden by now)
                wait.until(
                    lambda d, done=done: (
                        done in d.find_element(By.ID, "progress").get_attribute("textContent")
                    )
                )
                if name == "bob":
                    wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
            finally:
                driver.quit()
    finally:
        server.stop()
    rows = [
        (r["annotator"], r["unit"], r["description"], r["mismatches"], r["category"]) for r in store.answers()
    ]
    assert rows == [
        ("ann", 0, "red stripes", [1, 3], "texture or material"),
        ("bob", 1, "a disc", [], "object"),
        ("bob", 0, "Red stripes", [3], "texture or material"),
    ]
    result = {r["unit"]: r for r in store.results()["units"]}[0]
    assert result["label"] == "red stripes" and result["agreement"] == 1.0
    assert result["precision"] == pytest.approx(((1 - 2 / K) + (1 - 1 / K)) / 2, abs=1e-4)


# -- the command line -----------------------------------------------------------------------------


def test_the_command_exports_results_and_refuses_a_used_port_and_a_foreign_db(tmp_path, capsys):
    from cnnjax.cli import main

    store, _ = make_project(tmp_path)
    a = store.add_annotator("ann")["id"]
    store.add_answer(a, store.unit("conv5", 2)["id"], "a <b>shoe</b>", "object", [0])
    out = tmp_path / "export"
    assert main(["annotate", "--db", str(store.path), "--export", str(out)]) == 0
    exported = json.loads((out / "results.json").read_text())
    assert (
        exported["units"][0]["label"] == "a <b>shoe</b>" and "&lt;b&gt;" in (out / "results.html").read_text()
    )
    assert (out / "results.csv").read_text().splitlines()[1].startswith("conv5,2,a <b>shoe</b>,object,0.75")
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        argv = ["annotate", "--db", str(tmp_path / "new.sqlite"), "--layer", "conv5", "--data",
                "fashion-mnist", "--model", "fashionnet", "--port", port]  # fmt: skip
        assert main(argv) == 1
        assert "in use" in capsys.readouterr().err
    foreign = tmp_path / "photos.db"
    sqlite3.connect(foreign).execute("CREATE TABLE photos (id INTEGER)").connection.commit()
    before = foreign.read_bytes()
    assert main(["annotate", "--db", str(foreign), "--export", str(tmp_path / "e2")]) == 1
    assert "another tool" in capsys.readouterr().err and foreign.read_bytes() == before
    assert CATEGORIES[0] == "simple elements and colours" and os.path.exists(store.path)


def test_the_annotate_command_serves_a_models_units(tmp_path):
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(photos / f"{i}.png")
    port, db = free_port(), tmp_path / "project" / "answers.sqlite"
    cmd = [sys.executable, "-m", "cnnjax.cli", "annotate", "--model", "fashionnet", "--layer", "conv5",
           "--data", str(photos), "--units", "3", "5", "--top-k", "4", "--db", str(db), "--port", str(port),
           "--quiet"]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert "annotate 2 units of fashionnet conv5" in proc.stdout.readline()
            server = type("S", (), {"url": f"http://127.0.0.1:{port}"})()
            token = sign_in_when_up(server, "ann")
            status, body = call(server.url + "/api/next", token=token)
            assert json.loads(body)["unit"] == {"layer": "conv5", "unit": 3, "images": 4}
            status, png = call(server.url + "/crops/conv5/5/3.png")
            assert status == 200 and png.startswith(b"\x89PNG")
            assert Image.open(io.BytesIO(png)).size == (168, 168)  # 28 px, enlarged 6x
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    assert sorted(p.name for p in (db.parent / "crops" / "conv5").iterdir()) == ["3", "5"]
