import pytest
import torch

# No sys.path edits: tests/ is a package, so pytest puts the checkout's root (the root scripts and
# retinanet/) first on the path.

# Tests run on 2-core CI machines: small thread pools avoid oversubscription with DataLoader workers.
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
