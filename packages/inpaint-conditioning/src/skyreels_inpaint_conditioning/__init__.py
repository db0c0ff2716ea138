"""One channel-concat formulation (V | I | M) for every generation and editing task, plus in-context
references.

Paper sections 3.2 (eq. 7: ``Concat(V, I, M)``), 3.3 (eqs. 8-9: references prepended at negative
temporal positions) and 4.1 (task mixtures per training stage). Masks: 1 = condition/keep, 0 = generate.
"""

from skyreels_inpaint_conditioning.conditioning import (
    InpaintCondition,
    build_inpaint_condition,
    concat_inpaint_input,
    video_from_keyframes,
)
from skyreels_inpaint_conditioning.edit_masks import (
    EditMaskKind,
    random_box_mask,
    random_brush_mask,
    random_edit_mask,
    random_moving_box_mask,
    random_outpainting_mask,
    random_temporal_span_mask,
)
from skyreels_inpaint_conditioning.errors import (
    ConditioningShapeError,
    InpaintConditioningError,
    MaskValueError,
    ReferencePackingError,
    TaskMixtureError,
    TaskParameterError,
)
from skyreels_inpaint_conditioning.latent_mask import (
    check_binary_mask,
    latent_frame_span,
    latent_grid_size,
    latent_num_frames,
    reduce_pixel_mask_to_latent,
)
from skyreels_inpaint_conditioning.mixer import PAPER_STAGE_MIXTURES, TaskMixture, TaskSampler, TrainingTask
from skyreels_inpaint_conditioning.pooling_vae import PoolingVideoVae
from skyreels_inpaint_conditioning.reference_math import reduce_pixel_mask_to_latent_loop
from skyreels_inpaint_conditioning.references import (
    PackedAudioReferences,
    PackedVideoReferences,
    pack_audio_references,
    pack_video_references,
)
from skyreels_inpaint_conditioning.tasks import (
    ClipShape,
    CombinedTask,
    ImageInpainting,
    ImageToVideo,
    StartEndInterpolation,
    TaskKind,
    TaskSpec,
    TextToVideo,
    VideoEditing,
    VideoExtension,
)
from skyreels_inpaint_conditioning.vae import (
    BlackLatentCache,
    VideoVae,
    black_image_latent,
    check_video_vae,
    default_black_latent_cache,
)

__all__ = [
    "PAPER_STAGE_MIXTURES",
    "BlackLatentCache",
    "ClipShape",
    "CombinedTask",
    "ConditioningShapeError",
    "EditMaskKind",
    "ImageInpainting",
    "ImageToVideo",
    "InpaintCondition",
    "InpaintConditioningError",
    "MaskValueError",
    "PackedAudioReferences",
    "PackedVideoReferences",
    "PoolingVideoVae",
    "ReferencePackingError",
    "StartEndInterpolation",
    "TaskKind",
    "TaskMixture",
    "TaskMixtureError",
    "TaskParameterError",
    "TaskSampler",
    "TaskSpec",
    "TextToVideo",
    "TrainingTask",
    "VideoEditing",
    "VideoExtension",
    "VideoVae",
    "black_image_latent",
    "build_inpaint_condition",
    "check_binary_mask",
    "check_video_vae",
    "concat_inpaint_input",
    "default_black_latent_cache",
    "latent_frame_span",
    "latent_grid_size",
    "latent_num_frames",
    "pack_audio_references",
    "pack_video_references",
    "random_box_mask",
    "random_brush_mask",
    "random_edit_mask",
    "random_moving_box_mask",
    "random_outpainting_mask",
    "random_temporal_span_mask",
    "reduce_pixel_mask_to_latent",
    "reduce_pixel_mask_to_latent_loop",
    "video_from_keyframes",
]
