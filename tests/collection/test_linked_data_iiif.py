"""IIIF out: tiles cut at import, the level 0 image service, manifests and type collections.

Manifests are read back into iiif-prezi3's models (the Presentation 3 schema as pydantic models),
so a manifest that does not fit the specification fails here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from iiif_prezi3 import Collection, Manifest
from PIL import Image

from collection import services
from collection.importers.nuds import import_nuds_paths
from collection.models import Item, Specimen, SpecimenImage
from tests.factories import make_image, make_item, make_specimen
from tests.samples import ANS_SMALL as SMALL
from tests.samples import copy_records


@pytest.fixture
def imported(db, ans_dir, tmp_path):
    """Four ANS coins (two of one type) imported with their photos."""
    folder = copy_records(ans_dir, tmp_path, SMALL)
    result = import_nuds_paths([folder / "nuds"])
    assert not result.failed
    return folder


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _photo(path: Path, size=(1100, 700), color="#a08040") -> Path:
    """A photo larger than one tile (catalogue photos from a scanner), with something to see in it."""
    image = Image.new("RGB", size, "white")
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (size[0] // 4, size[1] // 4))
    image.save(path)
    return path


@pytest.fixture
def large(db, tmp_path) -> SpecimenImage:
    """A public specimen with a 1,100 × 700 PNG photo attached as an import attaches it."""
    specimen = make_specimen(make_item())
    image, outcome = services.specimen_image_attach(
        specimen=specimen, side="obverse", path=_photo(tmp_path / "big.png")
    )
    assert outcome == "added"
    return image


@pytest.mark.django_db
class TestTilesAtImport:
    def test_an_ans_photo_is_its_own_single_tile(self, imported):
        for image in SpecimenImage.objects.all():
            assert image.tiles["folder"] and image.tiles["full_from_image"]
            assert services.specimen_image_tile_names(image=image) == []  # nothing to write: 300 px < 512 px

    def test_a_larger_photo_gets_its_pyramid_in_storage(self, large):
        names = services.specimen_image_tile_names(image=large)
        assert len(names) == 11  # 8 tiles, the whole image at 1/2 and 1/4, and full size (a PNG: a JPEG copy)
        assert all(default_storage.exists(name) for name in names)

    def test_replacing_a_photo_removes_the_old_tiles_after_commit(
        self, large, tmp_path, django_capture_on_commit_callbacks
    ):
        old = services.specimen_image_tile_names(image=large)
        with django_capture_on_commit_callbacks(execute=True):
            services.specimen_image_attach(
                specimen=large.specimen, side="obverse", path=_photo(tmp_path / "new.png", (900, 600), "#405080")
            )
        large.refresh_from_db()
        new = services.specimen_image_tile_names(image=large)
        assert not set(new) & set(old)
        assert not any(default_storage.exists(name) for name in old)
        assert all(default_storage.exists(name) for name in new)

    def test_a_failed_record_leaves_no_tiles_behind(self, ans_dir, tmp_path, settings):
        folder = copy_records(ans_dir, tmp_path, SMALL[:1])
        (folder / "images" / f"{SMALL[0]}.obv.jpg").unlink()
        _photo(folder / "images" / f"{SMALL[0]}.obv.png")  # stored first, with its tiles…
        (folder / "images" / f"{SMALL[0]}.rev.jpg").write_bytes(b"not a photo")  # …then the record fails
        result = import_nuds_paths([folder / "nuds"])
        assert len(result.failed) == 1 and "unreadable image" in result.failed[0][1]
        assert not [p for p in (Path(settings.MEDIA_ROOT) / "iiif").rglob("*") if p.is_file()]


@pytest.mark.django_db
class TestTilesCommand:
    def test_it_makes_tiles_for_images_that_have_none(self):
        image = make_image(make_specimen(make_item()))  # stored directly, as approvals do: no tiles
        assert image.tiles == {}
        call_command("iiif_tiles", "--no-progress")
        image.refresh_from_db()
        assert image.tiles["folder"] and not image.tiles["full_from_image"]  # a PNG: full size is a JPEG tile
        names = services.specimen_image_tile_names(image=image)
        assert names and all(default_storage.exists(n) for n in names)
        folder = image.tiles["folder"]
        call_command("iiif_tiles", "--no-progress")  # idempotent
        image.refresh_from_db()
        assert image.tiles["folder"] == folder


@pytest.mark.django_db
class TestImageService:
    def test_info_json_lists_the_tiles_and_every_listed_file_is_served(self, large, client):
        response = client.get(f"/iiif/images/{large.pk}/info.json")
        assert response.status_code == 200
        assert response["Access-Control-Allow-Origin"] == "*"
        info = json.loads(response.content)
        assert info["type"] == "ImageService3" and info["profile"] == "level0"
        assert info["id"] == f"http://testserver/iiif/images/{large.pk}"
        assert (info["width"], info["height"]) == (1100, 700)
        assert info["tiles"] == [{"width": 512, "scaleFactors": [1, 2, 4]}]
        for size in info["sizes"]:
            data = _body(client.get(f"/iiif/images/{large.pk}/full/{size['width']},{size['height']}/0/default.jpg"))
            assert Image.open(io.BytesIO(data)).size == (size["width"], size["height"])
        # Every tile a viewer asks for, at every scale factor, as OpenSeadragon computes them.
        for factor in info["tiles"][0]["scaleFactors"]:
            step = 512 * factor
            for y in range(0, 700, step):
                for x in range(0, 1100, step):
                    w, h = min(step, 1100 - x), min(step, 700 - y)
                    region = "full" if (w, h) == (1100, 700) else f"{x},{y},{w},{h}"
                    size = f"{-(-w // factor)},{-(-h // factor)}"
                    response = client.get(f"/iiif/images/{large.pk}/{region}/{size}/0/default.jpg")
                    assert response.status_code == 200, (region, size)
                    assert response["Content-Type"] == "image/jpeg"
                    assert response["Access-Control-Allow-Origin"] == "*"
                    assert Image.open(io.BytesIO(_body(response))).size == tuple(int(v) for v in size.split(","))

    def test_full_size_of_a_jpeg_is_the_stored_photo_itself(self, imported, client):
        image = SpecimenImage.objects.first()
        full = _body(client.get(f"/iiif/images/{image.pk}/full/max/0/default.jpg"))
        assert full == image.image.open("rb").read()
        assert _body(client.get(f"/iiif/images/{image.pk}/full/300,300/0/default.jpg")) == full

    @pytest.mark.parametrize(
        "path",
        [
            "full/151,/0/default.jpg",
            "full/max/90/default.jpg",
            "full/max/0/gray.jpg",
            "full/max/0/default.png",
            "pct:1,1,5,5/max/0/default.jpg",
            "0,0,100,100/100,100/0/default.jpg",
        ],
    )
    def test_what_level_0_does_not_offer_is_not_found(self, large, client, path):
        assert client.get(f"/iiif/images/{large.pk}/{path}").status_code == 404

    def test_the_base_uri_redirects_to_info_json(self, large, client):
        response = client.get(f"/iiif/images/{large.pk}")
        assert response.status_code == 303 and response["Location"].endswith(f"/iiif/images/{large.pk}/info.json")

    def test_images_of_specimens_that_are_not_public_are_not_served(self, large, client):
        Specimen.objects.filter(pk=large.specimen_id).update(is_public=False)
        assert client.get(f"/iiif/images/{large.pk}/info.json").status_code == 404
        assert client.get(f"/iiif/images/{large.pk}/full/max/0/default.jpg").status_code == 404


@pytest.mark.django_db
class TestManifest:
    def test_a_specimen_has_a_valid_manifest_with_a_canvas_per_side(self, imported, client):
        specimen = Specimen.objects.get(record_id=SMALL[0])
        response = client.get(f"/iiif/specimens/{specimen.pk}/manifest.json")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/ld+json")
        assert response["Access-Control-Allow-Origin"] == "*"
        assert "Cookie" in response["Vary"] and "public" not in response["Cache-Control"]  # curators see more
        data = json.loads(response.content)
        Manifest.model_validate({k: v for k, v in data.items() if k != "@context"})  # the Presentation 3 schema
        assert data["@context"] == "http://iiif.io/api/presentation/3/context.json"
        assert [c["label"]["en"][0] for c in data["items"]] == ["Obverse", "Reverse"]
        images = {image.side: image for image in specimen.images.all()}
        for canvas, side in zip(data["items"], ("obverse", "reverse"), strict=True):
            body = canvas["items"][0]["items"][0]["body"]
            assert (canvas["width"], canvas["height"]) == (300, 300)
            assert body["service"][0]["id"] == f"http://testserver/iiif/images/{images[side].pk}"
            assert body["service"][0]["type"] == "ImageService3"
            assert canvas["items"][0]["items"][0]["target"] == canvas["id"]
        assert data["rights"] == "http://creativecommons.org/publicdomain/mark/1.0/"
        assert "American Numismatic Society" in data["requiredStatement"]["value"]["en"][0]
        see_also = {entry["format"]: entry["id"] for entry in data["seeAlso"]}
        assert see_also["application/xml"] == f"http://testserver/specimens/{specimen.pk}.xml"
        assert see_also["text/turtle"] == f"http://testserver/specimens/{specimen.pk}.ttl"
        metadata = {row["label"]["en"][0]: row["value"]["en"][0] for row in data["metadata"]}
        assert metadata["Record"] == SMALL[0] and metadata["Weight"].endswith(" g")
        assert data["partOf"][0]["id"] == f"http://testserver/iiif/items/{specimen.item_id}/collection.json"
        # Every URL it names answers (the service, the thumbnail, the records it points to).
        for url in [data["thumbnail"][0]["id"], *see_also.values(), data["homepage"][0]["id"]]:
            assert client.get(url.removeprefix("http://testserver")).status_code == 200, url

    def test_a_specimen_without_images_here_has_no_manifest(self, client):
        specimen = make_specimen(make_item())
        assert client.get(f"/iiif/specimens/{specimen.pk}/manifest.json").status_code == 404
        assert b"/viewer/" not in client.get(f"/specimens/{specimen.pk}/").content

    def test_the_specimen_page_links_the_viewer_and_the_manifest(self, imported, client):
        specimen = Specimen.objects.get(record_id=SMALL[0])
        page = client.get(f"/specimens/{specimen.pk}/").content.decode()
        assert f'href="/specimens/{specimen.pk}/viewer/"' in page
        assert f'href="/iiif/specimens/{specimen.pk}/manifest.json"' in page

    def test_a_manifest_is_small(self, imported, client):
        specimen = Specimen.objects.get(record_id=SMALL[0])
        assert len(client.get(f"/iiif/specimens/{specimen.pk}/manifest.json").content) < 12_000


@pytest.mark.django_db
class TestItemCollection:
    def test_a_type_lists_the_manifests_of_its_public_specimens(self, imported, client):
        item = Item.objects.get(uri__endswith="ric.4.sa.648b")
        specimens = list(item.specimens.order_by("record_id"))
        assert len(specimens) == 2
        Specimen.objects.filter(pk=specimens[1].pk).update(is_public=False)
        response = client.get(f"/iiif/items/{item.pk}/collection.json")
        assert response.status_code == 200 and response["Access-Control-Allow-Origin"] == "*"
        data = json.loads(response.content)
        Collection.model_validate({k: v for k, v in data.items() if k != "@context"})
        assert [m["id"] for m in data["items"]] == [f"http://testserver/iiif/specimens/{specimens[0].pk}/manifest.json"]
