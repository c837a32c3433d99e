"""Slides that are damaged, crafted or too large: every path refuses in bounded time and memory with a message that
names the slide and what is wrong (no hang, no empty message, no asyncio/zarr traceback), and every read path keeps
to the pixel budget (`medlab.slides.MAX_READ_PIXELS`, overridable per slide)."""
import math
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from unittest import mock

import numpy as np
import pytest
import tifffile

from medlab.cli import main
from medlab.mining import mine_patches
from medlab.slides import (MAX_READ_PIXELS, SlideError, deidentify_slide, make_sample_slide, open_slide, slide_identifiers,
                           tissue_mask)

from conftest import ROOT, shared_data

CMU = ('wsi', 'CMU-1-Small-Region.svs')


def huge_header_tiff(path, side=10**6):
    "A real 512 x 512 JPEG-tiled TIFF (4 tiles) whose ImageWidth/ImageLength are patched to `side`: 300 KB on disk."
    img = np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), compression='jpeg', photometric='rgb', metadata=None, software=False)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tf:
        for code in (256, 257):                      # LONG values, stored in the IFD entry itself
            struct.pack_into('<I', data, tf.pages[0].tags[code].valueoffset, side)
    path.write_bytes(bytes(data))
    return path


def large_single_level_tiff(path, width=16384, height=12288, tile=256):
    "A consistent single-level 200-megapixel tiled TIFF, left half tissue-pink, right half glass, from pre-compressed tiles (~1 MB)."
    pink = zlib.compress((np.zeros((tile, tile, 3), np.uint8) + np.array([200, 120, 170], np.uint8)).tobytes(), 9)
    glass = zlib.compress(np.full((tile, tile, 3), 242, np.uint8).tobytes(), 9)
    gx, gy = math.ceil(width / tile), math.ceil(height / tile)
    tiles = (pink if x < gx // 2 else glass for y in range(gy) for x in range(gx))
    tifffile.imwrite(path, tiles, shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile), compression='zlib',
                     photometric='rgb', resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit='CENTIMETER', metadata=None, software=False)
    return path


def zeroed_tiles_svs(path, tiles=range(20, 40)):
    "A copy of CMU-1-Small-Region.svs with the bytes of some level-0 JPEG tiles overwritten by zeros."
    shutil.copy(shared_data(*CMU), path)
    with tifffile.TiffFile(path) as tf:
        page = tf.series[0].levels[0].keyframe
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in tiles]
    data = bytearray(path.read_bytes())
    for offset, count in spans: data[offset:offset + count] = bytes(count)
    path.write_bytes(bytes(data))
    return path


def _run_python(code: str, timeout: float):
    "Run `code` in a fresh interpreter from the project root; (returncode, stdout, stderr), or pytest.fail when it hangs."
    try:
        done = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f'did not finish within {timeout} s (a hang)')
    return done.returncode, done.stdout, done.stderr


def test_a_huge_header_without_a_pyramid_is_refused_within_5_s_by_mine_patches(tmp_path):
    "Case 9: a header of 10^6 x 10^6 pixels over 4 real tiles: refused at once, naming the file, nothing written."
    huge = huge_header_tiff(tmp_path / 'huge.tif')
    assert huge.stat().st_size < 1_000_000
    out = tmp_path / 'mined'
    rc, stdout, stderr = _run_python(f"""
        import sys, time
        import medlab.mining, tiffslide       # imported before the clock starts: the bound is on the work, not on imports
        from medlab.cli import main
        t = time.perf_counter()
        rc = main(['mine-patches', {str(huge)!r}, {str(out)!r}])
        print('SECONDS', time.perf_counter() - t)
        sys.exit(rc)""", timeout=60)
    seconds = float(stdout.split('SECONDS')[1])
    assert seconds < 5, seconds                                     # it takes about 0.05 s
    assert rc == 1, (stdout, stderr)
    error = stderr.strip().splitlines()[-1]
    assert error.startswith('medlab mine-patches: error: ') and 'huge.tif' in error, error
    assert '1000000x1000000' in error and 'not a readable slide' in error, error
    assert not out.exists()


def test_the_huge_header_through_deidentify_slide_says_what_is_wrong(tmp_path, capsys):
    "Case 10: the same file through deidentify-slide: a message naming the file and its tiles, never an empty one."
    huge = huge_header_tiff(tmp_path / 'huge.tif')
    before = huge.read_bytes()
    assert main(['deidentify-slide', str(huge), str(tmp_path / 'clean.tif')]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith('medlab deidentify-slide: error: huge.tif') or str(huge) in error, error
    assert 'StopIteration' not in error and 'no message' not in error, error
    assert 'lists 4' in error and 'tiles' in error, error
    assert not (tmp_path / 'clean.tif').exists() and huge.read_bytes() == before
    with pytest.raises(SlideError, match=r'huge\.tif.*1000000x1000000'):
        deidentify_slide(huge, tmp_path / 'clean.tif')


def _cut(path, source, size):
    path.write_bytes(source.read_bytes()[:size]); return path

def _half_pyramid(path):
    "medlab's own pyramid cut in half: its first page is whole, its tiles run past the end of the file."
    full = make_sample_slide(path.with_name('full.tif'), size=1024)
    return _cut(path, full, full.stat().st_size // 2)

DAMAGED = {'empty.svs': lambda p: _cut(p, shared_data(*CMU), 0),
           'header_only.svs': lambda p: _cut(p, shared_data(*CMU), 16),                # no page at all
           'cut_before_first_page.svs': lambda p: _cut(p, shared_data(*CMU), 200_000),  # SVS keeps its IFDs after the tiles
           'cut_in_tiles.tif': _half_pyramid}


@pytest.mark.parametrize('name', DAMAGED)
def test_a_damaged_or_cut_short_slide_is_not_a_readable_slide(tmp_path, capsys, name):
    "Empty, header only, cut before its first page, cut inside its tiles: each is 'not a readable slide', named."
    path = DAMAGED[name](tmp_path / name)
    with pytest.raises(SlideError, match=rf'{name}.*not a readable slide'):
        open_slide(path)
    for argv in (['mine-patches', str(path), str(tmp_path / 'm')], ['deidentify-slide', str(path), str(tmp_path / 'c.svs')]):
        assert main(argv) == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert name in error and 'not a readable slide' in error and 'out of range' not in error, error
    assert not (tmp_path / 'c.svs').exists()


def test_zeroed_jpeg_tiles_raise_one_error_naming_the_slide_and_region(tmp_path):
    "A region over zeroed JPEG tiles: one SlideError with the slide, level and region, and no asyncio noise on stderr."
    bad = zeroed_tiles_svs(tmp_path / 'zeroed.svs')
    rc, stdout, stderr = _run_python(f"""
        import gc
        from medlab.slides import SlideError, open_slide
        slide = open_slide({str(bad)!r})
        try: slide.read_region((0, 0), 0, (2220, 1200))
        except SlideError as e: print('ERROR', e)
        gc.collect()""", timeout=120)
    assert rc == 0, stderr
    message = stdout.split('ERROR', 1)[1]
    assert 'zeroed.svs' in message and 'level 0' in message and '(0, 0)' in message and '2220x1200' in message, message
    for noise in ('Task exception was never retrieved', 'Task was destroyed', 'Traceback', 'asyncio'):
        assert noise not in stderr, stderr
    with pytest.raises(SlideError, match=r'zeroed\.svs'):
        mine_patches(bad, tmp_path / 'mined', 256, workers=1)


def _counting():
    "Patch tiffslide's reader (every slide, every thread) to record the pixels of each region it is asked for; (patch, sizes)."
    import tiffslide
    sizes, real = [], tiffslide.TiffSlide.read_region
    def read(self, location, level, size, **kw):
        sizes.append(int(size[0]) * int(size[1])); return real(self, location, level, size, **kw)
    return mock.patch.object(tiffslide.TiffSlide, 'read_region', read), sizes


def test_a_large_single_level_slide_has_its_thumbnail_read_by_striding_within_the_budget(tmp_path):
    "200 megapixels in one level: the thumbnail samples evenly spaced tiles (at most the budget), and still sees the tissue."
    big = large_single_level_tiff(tmp_path / 'big.tif')
    slide = open_slide(big)
    patch, sizes = _counting()
    with patch, pytest.warns(UserWarning, match=r'big\.tif.*no smaller level.*mosaic'):
        thumb, down = slide.thumbnail(1024)
    assert thumb.shape == (768, 1024, 3) and down == 16
    assert sum(sizes) <= MAX_READ_PIXELS < 16384 * 12288, sum(sizes)
    assert (thumb[:, :480] == [200, 120, 170]).all() and (thumb[:, 540:] == 242).all()   # a mosaic: the edge within a cell
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert tissue_mask(slide).fraction == pytest.approx(0.5, abs=0.03)
    whole = open_slide(big, max_pixels=2**28)                               # a user who wants the whole level read
    patch, sizes = _counting()
    with patch: whole.thumbnail(256)
    assert sum(sizes) == 16384 * 12288
    with pytest.raises(SlideError, match=r'big\.tif.*max_pixels'):
        open_slide(big, max_pixels=2**20).thumbnail(1024)                  # 16 tiles: too few to find tissue


def test_every_read_path_keeps_to_the_slides_budget(tmp_path):
    "read_region, thumbnail, tissue_mask, mining and deidentify_slide all read through the budget a slide was opened with."
    big = large_single_level_tiff(tmp_path / 'big.tif', width=4096, height=4096)
    small = open_slide(big, max_pixels=2**22)
    with pytest.raises(SlideError, match=r'big\.tif.*4096x2048.*max_pixels'):
        small.read_region((0, 0), 0, (4096, 2048))
    patch, sizes = _counting()
    with patch, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert tissue_mask(small).fraction == pytest.approx(0.5, abs=0.02)
        thumbnail_pixels = sum(sizes)
        r = mine_patches(small, tmp_path / 'mined', 256, workers=1, result=True)
    assert thumbnail_pixels <= 2**22 and max(sizes) <= 2**22 and r.kept == 0 and r.candidates > 0   # flat pink: 'blurred'
    clean = deidentify_slide(big, tmp_path / 'clean.tif')
    assert open_slide(clean).dimensions == (4096, 4096) and slide_identifiers(clean) == []
