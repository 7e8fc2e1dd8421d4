"""``cellinr view``: look at masks, meshes or cellinr folders (napari when installed, else a PNG)."""

from __future__ import annotations

import argparse

MESH_SUFFIXES = (".ply", ".obj", ".stl")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="show masks, meshes or cellinr folders in napari, or write a PNG picture without it",
        description="Show a 3D/3D+t mask TIFF, a mesh (PLY/OBJ/STL, as a Surface layer) or a cellinr folder "
        "(generated cells, benchmark, run, data set) in napari when it is installed (pip install "
        "'cellinr[napari]'); otherwise write a PNG: a montage of maximum-intensity projections for masks, a "
        "shaded rendering from three directions for meshes.",
    )
    p.add_argument("path", help="mask TIFF (3D or 3D+t), mesh file, or a cellinr output folder (napari)")
    p.add_argument("--out", help="PNG path when napari is absent (default: PATH stem + _montage.png or _mesh.png)")
    p.add_argument("--no-napari", action="store_true", help="always write the PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cellinr.errors import InputError

    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    is_mesh = path.suffix.lower() in MESH_SUFFIXES
    if not args.no_napari:
        try:
            import napari
        except ImportError:
            print('napari is not installed (pip install "cellinr[napari]"); writing a picture instead')
        else:
            return _show_napari(path)
    if is_mesh:
        from cellinr.io.meshes import read_mesh
        from cellinr.visualize import write_mesh_picture

        out = Path(args.out) if args.out else path.with_name(path.stem + "_mesh.png")
        mesh = read_mesh(path)
        write_mesh_picture(out, mesh, title=f"{path.name}: {len(mesh.faces)} triangles, "
                                             f"area {mesh.area():.4g} um^2, volume {mesh.volume():.4g} um^3")
        print(f"picture: {out}")
        return 0
    if path.is_dir():
        raise InputError(f"{path}: viewing a folder needs napari (pip install \"cellinr[napari]\"); "
                         "pass one of its mask TIFFs or meshes for a picture")
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


def layers_for(path) -> list:
    """The layer data ``cellinr view`` shows for ``path``: the plugin's reader, else a plain mask TIFF."""
    from cellinr.errors import InputError
    from cellinr.napari._layers import read_path, source_layer

    layers = read_path(path)
    if layers is None and path.is_file():
        layers = [source_layer(path, name=path.stem)]
    if not layers:
        raise InputError(f"{path}: not a mask, mesh or cellinr folder")
    return layers


def _show_napari(path) -> int:  # pragma: no cover - needs a display
    import napari

    viewer = napari.Viewer()
    for data, meta, kind in layers_for(path):
        getattr(viewer, f"add_{kind}")(data, **meta)
    viewer.dims.ndisplay = 3
    napari.run()
    return 0
