"""Stand-in for ComfyUI's folder_paths: folders under `base` (set by the tests)."""
import os

base = "/tmp/sf_stub_comfy"
FOLDERS = {"diffusion_models": "models/diffusion_models", "vae_approx": "models/vae_approx", "loras": "models/loras"}


def _dir(rel):
    p = os.path.join(base, rel)
    os.makedirs(p, exist_ok=True)
    return p


def get_temp_directory():
    return _dir("temp")


def get_output_directory():
    return _dir("output")


def get_input_directory():
    return _dir("input")


def get_folder_paths(name):
    return [_dir(FOLDERS[name])]


def get_filename_list(name):
    if name not in FOLDERS:
        raise KeyError(name)
    root = get_folder_paths(name)[0]
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def get_full_path_or_raise(name, filename):
    p = os.path.join(get_folder_paths(name)[0], filename)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")
    return p
