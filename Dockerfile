# RetinaNet toolkit on the official PyTorch CUDA runtime image (CUDA, cuDNN, torch, torchvision inside).
#   docker build -t retinanet .
#   docker run --gpus all --rm -it --shm-size=8g -v "$PWD/data:/workspace/retinanet/data" \
#       -v "$PWD/weights:/workspace/retinanet/weights" retinanet python detect.py --help
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

# TORCH_HOME inside the mounted weights folder: nothing is downloaded at run time, so ImageNet backbone
# weights are read from weights/torch/hub/checkpoints/ on the host.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/workspace/retinanet/weights/torch \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /workspace/retinanet

# Requirements before the code, so a code change does not reinstall them. The constraints file pins
# torch and torchvision to the CUDA builds of the base image (the versions pip itself sees); without it
# pip may swap them for other wheels from PyPI.
COPY requirements.txt requirements-export.txt ./
RUN python -c "from importlib.metadata import version; \
print('\n'.join(f'{name}=={version(name)}' for name in ('torch', 'torchvision')))" > /tmp/base-torch.txt \
    && pip install --no-cache-dir -c /tmp/base-torch.txt -r requirements.txt -r requirements-export.txt \
    && rm /tmp/base-torch.txt

COPY . .
# Fail the build, not the first run, when a library cannot load (e.g. a missing system library of OpenCV).
RUN python -c "import cv2, onnxruntime, pycocotools, retinanet.data, retinanet.model"

CMD ["bash"]
