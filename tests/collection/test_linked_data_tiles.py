"""Static IIIF level 0 tiles (collection.linked_data.tiles): the plan, the files, the lookup."""

from __future__ import annotations

import io

from PIL import Image

from collection.linked_data import tiles


class TestTilePlan:
    def test_a_catalogue_photo_is_its_own_single_tile(self):
        assert tiles.TILE_SIZE == 512
        assert tiles.scale_factors(300, 300) == [1]
        assert [(f.region, f.size) for f in tiles.tile_plan(300, 300)] == [("full", "max")]

    def test_a_larger_photo_has_a_pyramid(self):
        assert tiles.scale_factors(300, 300, tile=256) == [1, 2]
        assert tiles.sizes(300, 300, tile=256) == [(150, 150), (300, 300)]
        names = sorted(f.name for f in tiles.tile_plan(300, 300, tile=256))
        assert names == sorted(
            [
                "full_max.jpg",
                "0,0,256,256_256,256.jpg",
                "256,0,44,256_44,256.jpg",
                "0,256,256,44_256,44.jpg",
                "256,256,44,44_44,44.jpg",
                "full_150,150.jpg",
            ]
        )
        assert tiles.scale_factors(2400, 1800) == [1, 2, 4, 8]

    def test_tiles_cover_every_level_without_gaps(self):
        width, height = 1000, 700
        for factor in tiles.scale_factors(width, height, tile=256):
            cells = [
                f for f in tiles.tile_plan(width, height, tile=256) if f.scale_factor == factor and f.region != "full"
            ]
            if not cells:  # the level where the whole image is one tile
                continue
            area = sum(int(f.region.split(",")[2]) * int(f.region.split(",")[3]) for f in cells)
            assert area == width * height, factor


class TestTileLookup:
    def test_it_answers_canonical_and_short_forms(self):
        assert tiles.tile_lookup(300, 300, "0,0,256,256", "256,256", 256).name == "0,0,256,256_256,256.jpg"
        assert tiles.tile_lookup(300, 300, "0,0,256,256", "256,", 256).name == "0,0,256,256_256,256.jpg"
        assert tiles.tile_lookup(300, 300, "full", ",150", 256).name == "full_150,150.jpg"
        assert tiles.tile_lookup(300, 300, "0,0,300,300", "full", 256).name == "full_max.jpg"
        assert tiles.tile_lookup(300, 300, "full", "300,300").name == "full_max.jpg"

    def test_it_refuses_what_a_level_0_service_does_not_have(self):
        assert tiles.tile_lookup(300, 300, "full", "151,", 256) is None
        assert tiles.tile_lookup(300, 300, "full", "150,") is None  # one level at 512 px tiles
        assert tiles.tile_lookup(300, 300, "10,10,50,50", "50,50") is None
        assert tiles.tile_lookup(300, 300, "pct:0,0,50,50", "max") is None
        assert tiles.tile_lookup(300, 300, "full", "!100,100") is None


class TestTilesMake:
    def test_every_file_decodes_at_its_planned_size(self):
        image = Image.new("RGB", (1100, 700), "white")
        files = tiles.tiles_make(image)
        plan = {f.name: f for f in tiles.tile_plan(1100, 700)}
        assert len(files) == 6 + 2 + 3  # 512 px tiles at 1/1 and 1/2; the whole image at 1/4, 1/2 and full size
        assert set(files) == set(plan)
        for name, data in files.items():
            with Image.open(io.BytesIO(data)) as decoded:
                assert decoded.format == "JPEG"
                assert decoded.size == (plan[name].width, plan[name].height), name

    def test_a_jpeg_original_is_not_copied(self):
        files = tiles.tiles_make(Image.new("RGB", (300, 300)), skip_full=True, tile=256)
        assert "full_max.jpg" not in files and len(files) == 5

    def test_transparency_is_flattened_on_white(self):
        image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        data = tiles.tiles_make(image)["full_max.jpg"]
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.getpixel((5, 5)) == (255, 255, 255)
