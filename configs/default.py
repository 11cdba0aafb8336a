"""The paper's recipe (AI-KD section 5.2 and PS-KD's code): CIFAR-100, PreAct ResNet-18.

  python -m aikd_jax.main --config=configs/default.py --workdir=/tmp/aikd_default

Every experiment config starts from this one and overrides what differs.
"""
import ml_collections
from ml_collections import config_dict


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  # docs/methods.md: aikd and its ablations, baseline, tfkd, pskd, cskd, zipf_ls, tffd
  c.method = 'aikd'
  c.num_epochs = 300
  c.batch_size = 128  # global, over all devices and hosts
  c.eval_batch_size = 500
  c.dtype = 'float32'  # 'bfloat16': activations in bf16, params/BN stats/logits in f32
  # Train the superior in another run's workdir (`DIR/superior/`), shared by many students.
  c.superior_workdir = config_dict.placeholder(str)
  # Seed of phase 1 (the superior); None: seed + 1, so it differs from the student's.
  c.superior_seed = config_dict.placeholder(int)
  # An exported model (aikd_jax.tools.import_torch, or DIR/superior/model) to use as the
  # superior; phase 1 is then skipped and the superior is only evaluated.
  c.superior_init = config_dict.placeholder(str)
  # Phase 1 trains the superior when the method needs one ('auto'), or always ('always':
  # the superior is also the paper's Baseline, plain CE under superior_seed).
  c.train_superior = 'auto'
  # Batch augmentation (augment.*: Cutout, Mixup, CutMix) of phase 1: 'none' trains the
  # superior as the plain baseline (the paper's superior is "the baseline ... trained
  # following the standard training parameters"; section 5.5 adds the augmentations to
  # the self-KD training), 'same' gives it the student's augment settings.
  c.superior_augment = 'none'

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cifar100'
  c.data.tfds_dir = config_dict.placeholder(str)  # TFDS data_dir; None: TFDS default
  c.data.train_subset = config_dict.placeholder(int)  # first N train examples (demo, probes)
  c.data.eval_subset = config_dict.placeholder(int)  # first N test examples
  # Folder with the original files, for builders that read local files (Fashion-MNIST).
  c.data.manual_dir = config_dict.placeholder(str)

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'preact_resnet18'
  c.model.width = 64
  # Starting weights (an exported model, e.g. converted ImageNet weights) for both phases;
  # a classifier of another class count is re-initialised.
  c.model.init = config_dict.placeholder(str)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4  # coupled L2 on all parameters, as torch.optim.SGD
  c.optim.lr_milestones = (150, 225)  # epochs
  c.optim.lr_decay = 0.1

  c.aikd = ml_collections.ConfigDict()
  c.aikd.alpha_ce = 0.6
  c.aikd.alpha_p = 0.3
  c.aikd.alpha_g = 0.1
  c.aikd.omega = 0.1
  c.aikd.tau_p = 1.0
  c.aikd.tau_g = 1.0
  # The progressive target: 'snapshot' (last epoch's weights, eval mode, one more forward
  # pass per step) or 'table' (last epoch's train-mode logits per example, no extra pass).
  c.aikd.previous = 'snapshot'
  c.aikd.gp_weight = 10.0
  c.aikd.critic_steps = 1
  c.aikd.critic_lr = 1e-4
  c.aikd.critic_b1 = 0.9
  c.aikd.critic_b2 = 0.999
  c.aikd.critic_norm = 'batch'  # batch | layer | none
  c.aikd.critic_input = 'logits'  # logits | probs

  # The peer self-KD methods (docs/methods.md); their official values for CIFAR-100 and
  # PreAct ResNet-18. configs/common.py sets those that differ per dataset or model.
  c.tfkd = ml_collections.ConfigDict()  # TF-KD (self-training): the phase-1 model teaches
  c.tfkd.alpha = 0.95  # KD weight; DenseNets 0.9
  c.tfkd.temperature = 6.0  # DenseNets 20
  c.tfkd.multiplier = 50.0  # the official code's factor on its element-wise-mean KL

  c.pskd = ml_collections.ConfigDict()  # PS-KD
  c.pskd.alpha_t = 0.8  # alpha_T: the previous prediction's weight in the last epoch

  c.cskd = ml_collections.ConfigDict()  # CS-KD
  c.cskd.temperature = 4.0
  c.cskd.lam = 1.0  # 3 at 224 px

  c.zipf_ls = ml_collections.ConfigDict()  # Zipf's label smoothing
  c.zipf_ls.lam = 0.1  # 1.0 on Tiny-ImageNet and the fine-grained datasets
  c.zipf_ls.upsample = True  # votes on the x2-upsampled pre-pool map: 32 px yes, 224 px no

  c.tffd = ml_collections.ConfigDict()  # TF-FD
  c.tffd.lambda_inter = 5e-4
  c.tffd.lambda_intra = 8e-4

  # Batch augmentations on device (docs/methods.md, "Mixup and CutMix"); 0 switches one off.
  # The augmentation papers' settings (the AI-KD paper gives none): at 32 px their CIFAR
  # ones, cutout 8, mixup 1.0, cutmix 1.0 with cutmix_prob 0.5; at 224 px cutout 112,
  # mixup 0.2, cutmix 1.0 with cutmix_prob 1.0.
  c.augment = ml_collections.ConfigDict()
  c.augment.cutout = 0  # hole side in pixels
  c.augment.mixup = 0.0  # Beta(alpha, alpha)
  c.augment.cutmix = 0.0  # Beta(alpha, alpha)
  c.augment.cutmix_prob = 1.0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.max_to_keep = 2

  c.log_every_steps = 50
  # Skip most XLA optimisations: compiles take half the time, steps run slower. For smoke
  # tests of tiny models, never for real runs.
  c.fast_compile = False
  # Capture a jax.profiler trace of this many steps (after step 10) for TensorBoard's
  # profile tab, in the phase folder; 0: off.
  c.profile_steps = 0
  return c
