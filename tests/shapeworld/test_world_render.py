"""World spec, scene validation, placement and the renderer."""

import itertools

import numpy as np
import pytest

from t2ir1.shapeworld.render import render, shape_mask
from t2ir1.shapeworld.world import (
    WORLD,
    Scene,
    SceneError,
    SceneObject,
    WorldSpec,
    box_gap,
    place_pair,
    random_scene,
    relation_holds,
)


def test_palette_is_well_separated():
    palette = WORLD.palette().astype(float)  # [6, 3]: background + 5 colours
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(palette, 2)]
    # A pure colour plus noise must stay nearest its own entry: entries are > 160 apart,
    # far beyond the detector's default colour threshold of 60.
    assert min(distances) > 160


def test_words_cover_shapes_plurals_and_colours():
    words = WORLD.words()
    assert {"circle", "circles", "crosses", "squares", "triangles", "red", "purple"} <= set(words)
    assert len(words) == 2 * len(WORLD.shapes) + len(WORLD.colors)


def test_render_uses_only_palette_colours_and_fills_boxes_exactly():
    scene = Scene(
        objects=(
            SceneObject("square", "red", (2, 3, 14, 15)),
            SceneObject("circle", "blue", (20, 20, 40, 40)),
            SceneObject("triangle", "green", (44, 2, 60, 18)),
            SceneObject("cross", "yellow", (44, 40, 60, 56)),
        )
    )
    pixels = np.asarray(render(scene))  # [64, 64, 3]
    assert pixels.shape == (64, 64, 3)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    used = [WORLD.background] + [WORLD.colors[name] for name in ("red", "blue", "green", "yellow")]
    assert colours == {tuple(c) for c in used}
    # The square covers exactly its half-open box: 12 x 12 = 144 red pixels.
    red = np.all(pixels == WORLD.colors["red"], axis=-1)
    assert red.sum() == 144 and red[3:15, 2:14].all()
    # Every shape touches all four sides of its box (so detector boxes equal scene boxes).
    for obj in scene.objects:
        mask = np.all(pixels == WORLD.colors[obj.color], axis=-1)
        rows, cols = np.nonzero(mask)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == obj.box


def test_shape_masks_have_the_expected_fill():
    # square 1, circle ~pi/4 = 0.785, triangle and diamond ~0.5 of their box.
    fills = {shape: shape_mask(shape, 20, 20).mean() for shape in (*WORLD.shapes, "diamond")}
    assert fills["square"] == 1.0
    assert abs(fills["circle"] - 0.785) < 0.03
    assert abs(fills["triangle"] - 0.5) < 0.05 and abs(fills["diamond"] - 0.5) < 0.05
    # Cross at 21 px: two 7-px bars, 2 * 21 * 7 - 7 * 7 = 245 of 441 pixels = 5/9.
    assert shape_mask("cross", 21, 21).sum() == 245
    # The triangle's mass sits low (1/4 vs 3/4 of its area), the diamond's is about even
    # (pixel rounding of the polygon puts 105 of its 200 pixels in the top half at 20 px).
    triangle, diamond = shape_mask("triangle", 20, 20), shape_mask("diamond", 20, 20)
    assert triangle[:10].sum() < 0.5 * triangle[10:].sum()
    assert abs(int(diamond[:10].sum()) - int(diamond[10:].sum())) <= 0.1 * diamond.sum()


def test_random_scenes_are_valid_and_deterministic():
    for seed in range(200):
        scene = random_scene(np.random.default_rng(seed))
        scene.validate()
        assert 1 <= len(scene.objects) <= WORLD.max_objects
        for a, b in itertools.combinations(scene.objects, 2):
            assert box_gap(a.box, b.box) >= WORLD.object_gap
        for obj in scene.objects:
            assert WORLD.min_object_size <= obj.size <= WORLD.max_object_size
            assert min(obj.box) >= WORLD.border and max(obj.box) <= WORLD.image_size - WORLD.border
    assert random_scene(np.random.default_rng(7)) == random_scene(np.random.default_rng(7))
    assert random_scene(np.random.default_rng(7)) != random_scene(np.random.default_rng(8))


def test_default_world_places_objects_on_the_patch_grid():
    # 20 px objects fill 3 x 3 cells of 8 px less 2 px on each side: boxes start at 8 * c + 2
    assert WORLD.object_sizes == (20,)
    for seed in range(100):
        for obj in random_scene(np.random.default_rng(seed)).objects:
            x0, y0, x1, y1 = obj.box
            assert x0 % 8 == 2 and y0 % 8 == 2 and x1 - x0 == 20 == y1 - y0


def test_adjacent_grid_cells_are_next_to_each_other():
    rng = np.random.default_rng(3)
    for _ in range(50):
        first, second = place_pair(rng, "next to")
        # two objects in neighbouring cells: 2 * cell_inset = 4 px apart, within near_gap
        assert box_gap(first, second) == 4
        assert (first[0] - second[0]) % 8 == 0 and (first[1] - second[1]) % 8 == 0


def test_free_placement_without_a_grid():
    world = WorldSpec(grid=0, min_object_size=12, max_object_size=24)
    assert world.object_sizes == tuple(range(12, 25))
    sizes = {
        o.size for seed in range(100) for o in random_scene(np.random.default_rng(seed), world=world).objects
    }
    offsets = {
        o.box[0] % 8
        for seed in range(100)
        for o in random_scene(np.random.default_rng(seed), world=world).objects
    }
    assert len(sizes) > 5 and len(offsets) > 4


def test_grid_world_validation_names_the_problem():
    with pytest.raises(SceneError, match="must divide image_size"):
        WorldSpec(grid=7)
    with pytest.raises(SceneError, match="raise cell_inset"):
        WorldSpec(cell_inset=1, border=1)
    with pytest.raises(SceneError, match="no side"):
        WorldSpec(min_object_size=13, max_object_size=15)


def test_crowded_scenes_still_place():
    for seed in range(100):
        assert len(random_scene(np.random.default_rng(seed), num_objects=4).objects) == 4


@pytest.mark.parametrize("locality", ["left of", "right of", "above", "below", "next to"])
def test_place_pair_satisfies_relation_clearly(locality):
    rng = np.random.default_rng(0)
    for _ in range(100):
        first, second = place_pair(rng, locality)
        assert relation_holds(first, second, locality, clear=True)
        assert relation_holds(first, second, locality)
        assert box_gap(first, second) >= WORLD.object_gap


def test_relation_holds_by_hand():
    left, right = (4, 20, 20, 36), (40, 20, 56, 36)  # centres (12, 28) and (48, 28): dx = 36, dy = 0
    assert relation_holds(left, right, "left of") and relation_holds(right, left, "right of")
    assert not relation_holds(right, left, "left of") and not relation_holds(left, right, "above")
    top, bottom = (20, 4, 36, 20), (20, 40, 36, 56)
    assert relation_holds(top, bottom, "above") and relation_holds(bottom, top, "below")
    # Gap 20 px > near_gap 8: not next to; gap 4: next to.
    assert not relation_holds(left, right, "next to")
    assert relation_holds(left, (24, 20, 40, 36), "next to")
    with pytest.raises(SceneError, match="unknown locality"):
        relation_holds(left, right, "inside")


def test_scene_validation_names_the_problem():
    with pytest.raises(SceneError, match="shape 'star'"):
        Scene((SceneObject("star", "red", (0, 0, 10, 10)),)).validate()
    with pytest.raises(SceneError, match="colour 'pink'"):
        Scene((SceneObject("circle", "pink", (0, 0, 10, 10)),)).validate()
    with pytest.raises(SceneError, match="outside"):
        Scene((SceneObject("circle", "red", (60, 0, 70, 10)),)).validate()
    overlapping = (
        SceneObject("circle", "red", (0, 0, 10, 10)),
        SceneObject("square", "blue", (5, 5, 15, 15)),
    )
    with pytest.raises(SceneError, match="overlap"):
        Scene(overlapping).validate()
    with pytest.raises(SceneError, match="cannot be drawn"):
        WorldSpec(shapes=("circle", "star"))
    with pytest.raises(SceneError, match="does not fit"):
        WorldSpec(image_size=20)


def test_other_image_sizes_render():
    world = WorldSpec(image_size=96, min_object_size=16, max_object_size=32)
    scene = random_scene(np.random.default_rng(1), world=world)
    assert render(scene).size == (96, 96)
