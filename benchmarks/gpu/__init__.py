"""The GPU check: a bundle that travels to a CUDA machine without network (:mod:`.bundle`, ``make gpu-bundle``)
and the driver that measures rmseg's CUDA path there in one call (:mod:`.check`, ``scripts/gpu_check.sh``)."""
