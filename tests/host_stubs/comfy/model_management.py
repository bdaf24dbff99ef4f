"""Stand-in for comfy.model_management: CPU only, records loads and frees; interruption by a flag."""
import torch

calls = []
interrupt_after = None  # raise at the n-th interruption check (None: never)
checks = 0


class InterruptProcessingException(Exception):
    pass


def reset():
    global interrupt_after, checks
    calls.clear()
    interrupt_after, checks = None, 0


def throw_exception_if_processing_interrupted():
    global checks
    checks += 1
    if interrupt_after is not None and checks >= interrupt_after:
        raise InterruptProcessingException()


def load_models_gpu(models, memory_required=0, force_full_load=False):
    calls.append(("load_models_gpu", len(models)))


def soft_empty_cache(force=False):
    calls.append(("soft_empty_cache",))


def intermediate_device():
    return torch.device("cpu")


def get_torch_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")
