"""``cellinr view``: look at masks or meshes (napari when installed, else a PNG montage)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="show masks or meshes in napari, or write a PNG montage without it",
        description="Show a 3D/3D+t mask TIFF or a mesh (PLY/OBJ/STL) in napari when it is installed "
        "(pip install 'cellinr[napari]'); otherwise write a PNG montage of maximum-intensity projections.",
    )
    p.add_argument("path", help="mask TIFF (3D or 3D+t) or mesh file")
    p.add_argument("--out", help="montage PNG path when napari is absent (default: PATH stem + _montage.png)")
    p.add_argument("--no-napari", action="store_true", help="always write the montage")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cellinr.errors import InputError

    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    is_mesh = path.suffix.lower() in (".ply", ".obj", ".stl")
    if not args.no_napari:
        try:
            import napari  # noqa: F401
        except ImportError:
            print("napari is not installed (pip install 'cellinr[napari]'); writing a montage instead")
        else:
            return _show_napari(path, is_mesh)
    if is_mesh:
        raise InputError(f"{path}: viewing meshes needs napari (pip install 'cellinr[napari]')")
    from cellinr.io.tiff import read_tiff
    from cellinr.visualize import mask_mips, write_montage

    img = read_tiff(path)
    data = img.data
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise InputError(f"{path}: expected a 3D or 3D+t mask, got axes {img.axes}")
    from cellinr._util.outputs import check_no_overlap

    out = Path(args.out) if args.out else path.with_name(path.stem + "_montage.png")
    check_no_overlap([path], [out])
    mips = mask_mips(data)
    write_montage(out, [mips["XY"], mips["XZ"], mips["YZ"]], labels=["MIP XY", "MIP XZ", "MIP YZ"], title=path.name)
    print(f"montage: {out}")
    return 0


def _show_napari(path, is_mesh: bool) -> int:  # pragma: no cover - needs a display
    import napari

    viewer = napari.Viewer()
    if is_mesh:
        viewer.open(str(path))
    else:
        from cellinr.io.tiff import read_tiff

        img = read_tiff(path)
        scale = img.spacing if img.spacing is not None else (1.0, 1.0, 1.0)
        if img.data.ndim == 4:
            scale = (1.0, *scale)
        viewer.add_labels((img.data > 0).astype("uint8"), name=path.stem, scale=scale)
        viewer.dims.ndisplay = 3
    napari.run()
    return 0
