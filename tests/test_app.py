from app import create_app
from core import CODECS


def test_health_and_home_page(tmp_path):
    app = create_app(tmp_path / "data")
    client = app.server.test_client()
    health = client.get("/api/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "ok" and set(body["codecs"]) == {c.name for c in CODECS}
    assert (tmp_path / "data").is_dir()
    page = client.get("/")
    assert page.status_code == 200 and b"RadPress" in page.data


def test_home_layout_lists_the_registry():
    import pages.home  # noqa: F401  (registers the page)
    from pages.home import layout

    text = str(layout())
    for codec in CODECS:
        assert str(codec.transfer_syntax) in text
