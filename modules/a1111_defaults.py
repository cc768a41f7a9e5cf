"""A1111 settings that extensions read but our engine does not use (yet), with A1111 v1.10's defaults.

Extensions read `opts.<key>` for settings that every A1111 install has — Ultimate SD upscale reads
`img2img_background_color`, others `grid_format`, `save_txt`, `eta_ancestral`, `sd_checkpoints_limit` … — and an
unknown key is an AttributeError. These keys are registered as hidden settings (section id None: kept in
config.json when set, readable and settable through opts and /sdapi/v1/options, not shown in the Settings tab,
where a control that changes nothing would mislead). A key that one of our own settings already defines is left
alone. Each row: key, default.
"""
from __future__ import annotations

HIDDEN_SECTION = (None, "Hidden (A1111 compatibility)")

DEFAULTS: dict[str, object] = {
    # saving images and grids
    "samples_filename_pattern": "", "save_images_add_number": True, "save_images_replace_action": "Replace",
    "grid_save": True, "grid_format": "png", "grid_extended_filename": False, "grid_only_if_multiple": True,
    "grid_prevent_empty_spots": False, "grid_zip_filename_pattern": "", "n_rows": -1, "font": "",
    "grid_text_active_color": "#000000", "grid_text_inactive_color": "#999999", "grid_background_color": "#ffffff",
    "save_images_before_face_restoration": False, "save_images_before_highres_fix": False,
    "save_images_before_color_correction": False, "save_mask": False, "save_mask_composite": False,
    "jpeg_quality": 80, "webp_lossless": False, "export_for_4chan": True, "img_downscale_threshold": 4.0,
    "target_side_length": 4000.0, "img_max_size_mp": 200.0, "use_original_name_batch": True,
    "use_upscaler_name_as_suffix": False, "save_selected_only": True, "save_init_img": False, "temp_dir": "",
    "clean_temp_dir_at_start": False, "save_incomplete_images": False, "save_txt": False,
    "do_not_add_watermark": False, "return_grid": True, "do_not_show_images": False,
    "outdir_extras_samples": "outputs/extras-images", "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids", "outdir_img2img_grids": "outputs/img2img-grids",
    "outdir_save": "log/images", "outdir_init_images": "outputs/init-images", "grid_save_to_dirs": True,
    "use_save_to_dirs_for_ui": False, "directories_filename_pattern": "[date]", "directories_max_prompt_words": 8,
    # upscaling and face restoration
    "ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8, "DAT_tile": 192, "DAT_tile_overlap": 8,
    "upscaler_for_img2img": None, "set_scale_by_when_changing_upscaler": False, "face_restoration": False,
    "face_restoration_model": "CodeFormer", "code_former_weight": 0.5, "face_restoration_unload": False,
    # system
    "auto_launch_browser": "Local", "enable_console_prompts": False, "show_warnings": False,
    "show_gradio_deprecation_warnings": True, "memmon_poll_rate": 8, "samples_log_stdout": False,
    "multiple_tqdm": True, "enable_upscale_progressbar": True, "print_hypernet_extra": False,
    "list_hidden_files": True, "disable_mmap_load_safetensors": False, "hide_ldm_prints": True,
    # stable diffusion
    "sd_checkpoints_limit": 1, "sd_checkpoints_keep_in_cpu": True, "sd_checkpoint_cache": 0, "sd_unet": "Automatic",
    "enable_quantization": False, "emphasis": "Original", "enable_batch_seeds": True, "comma_padding_backtrack": 20,
    "sdxl_clip_l_skip": False, "upcast_attn": False, "tiling": False, "hires_fix_refiner_pass": "second pass",
    "sdxl_crop_top": 0, "sdxl_crop_left": 0, "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0, "sd_vae_checkpoint_cache": 0,
    "sd_vae_overrides_per_model_preferences": True, "auto_vae_precision_bfloat16": False, "auto_vae_precision": True,
    "sd_vae_encode_method": "Full", "sd_vae_decode_method": "Full",
    # img2img
    "inpainting_mask_weight": 1.0, "initial_noise_multiplier": 1.0, "img2img_color_correction": False,
    "img2img_fix_steps": False, "img2img_background_color": "#ffffff", "img2img_editor_height": 720,
    "img2img_sketch_default_brush_color": "#ffffff", "img2img_inpaint_mask_brush_color": "#ffffff",
    "img2img_inpaint_sketch_default_brush_color": "#ffffff", "return_mask": False, "return_mask_composite": False,
    "img2img_batch_show_results_limit": 32, "overlay_inpaint": True,
    # optimizations and compatibility
    "cross_attention_optimization": "Automatic", "s_min_uncond": 0.0, "token_merging_ratio": 0.0,
    "token_merging_ratio_img2img": 0.0, "token_merging_ratio_hr": 0.0, "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False, "persistent_cond_cache": True, "batch_cond_uncond": True, "fp8_storage": "Disable",
    "cache_fp16_weight": False, "auto_backcompat": True, "use_old_emphasis_implementation": False,
    "use_old_karras_scheduler_sigmas": False, "no_dpmpp_sde_batch_determinism": False,
    "use_old_hires_fix_width_height": False, "hires_fix_use_firstpass_conds": False,
    "use_downcasted_alpha_bar": False, "refiner_switch_by_sample_steps": False,
    # interrogate
    "interrogate_keep_models_in_memory": False, "interrogate_return_ranks": False, "interrogate_clip_num_beams": 1,
    "interrogate_clip_min_length": 24, "interrogate_clip_max_length": 48, "interrogate_clip_dict_limit": 1500,
    "interrogate_clip_skip_categories": [], "interrogate_deepbooru_score_threshold": 0.5,
    "deepbooru_sort_alpha": True, "deepbooru_use_spaces": True, "deepbooru_escape": True, "deepbooru_filter_tags": "",
    # extra networks
    "extra_networks_show_hidden_directories": True, "extra_networks_dir_button_function": False,
    "extra_networks_hidden_models": "When searched", "extra_networks_default_multiplier": 1.0,
    "extra_networks_card_width": 0, "extra_networks_card_height": 0, "extra_networks_card_text_scale": 1.0,
    "extra_networks_card_show_desc": True, "extra_networks_card_description_is_html": False,
    "extra_networks_card_order_field": "Path", "extra_networks_card_order": "Ascending",
    "extra_networks_tree_view_style": "Dirs", "extra_networks_tree_view_default_enabled": True,
    "extra_networks_tree_view_default_width": 180, "extra_networks_add_text_separator": " ",
    "ui_extra_networks_tab_reorder": "", "textual_inversion_print_at_load": False,
    "textual_inversion_add_hashes_to_infotext": True, "sd_hypernetwork": "None", "sd_lora": "None",
    "lora_preferred_name": "Alias from file", "lora_add_hashes_to_infotext": True, "lora_show_all": False,
    "lora_hide_unknown_for_versions": [], "lora_in_memory_limit": 0, "lora_not_found_warning_console": False,
    "lora_not_found_gradio_warning": False,
    # user interface
    "ui_tab_order": [], "hidden_tabs": [], "ui_reorder_list": [], "gradio_theme": "Default",
    "gradio_themes_cache": True, "show_progress_in_title": True, "send_seed": True, "send_size": True,
    "js_modal_lightbox": True, "js_modal_lightbox_initially_zoomed": True, "js_modal_lightbox_gamepad": False,
    "js_modal_lightbox_gamepad_repeat": 250.0, "gallery_height": "", "open_dir_button_choice": "Subdirectory",
    "compact_prompt_box": False, "samplers_in_dropdown": True, "dimensions_and_batch_together": True,
    "sd_checkpoint_dropdown_use_short": False, "hires_fix_show_sampler": False, "hires_fix_show_prompts": False,
    "txt2img_settings_accordion": False, "img2img_settings_accordion": False, "interrupt_after_current": True,
    "enable_reloading_ui_scripts": False, "keyedit_precision_attention": 0.1, "keyedit_precision_extra": 0.05,
    "keyedit_delimiters": ".,\\/!?%^*;:{}=`~() ", "keyedit_move": True, "disable_token_counters": False,
    "include_styles_into_token_counters": True, "extra_options_txt2img": [], "extra_options_img2img": [],
    "extra_options_cols": 1, "extra_options_accordion": False,
    # infotext
    "add_model_hash_to_info": True, "add_model_name_to_info": True, "add_user_name_to_info": False,
    "add_version_to_infotext": True, "disable_weights_auto_swap": True, "infotext_skip_pasting": [],
    "infotext_styles": "Apply if any",
    # live previews
    "live_previews_image_format": "png", "show_progress_grid": True, "show_progress_type": "Approx NN",
    "live_preview_allow_lowvram_full": False, "live_preview_content": "Prompt", "live_preview_refresh_period": 1000.0,
    "live_preview_fast_interrupt": False, "js_live_preview_in_modal_lightbox": False,
    # sampler parameters
    "hide_samplers": [], "eta_ddim": 0.0, "eta_ancestral": 1.0, "ddim_discretize": "uniform", "s_churn": 0.0,
    "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0,
    "always_discard_next_to_last_sigma": False, "sgm_noise_multiplier": False, "uni_pc_variant": "bh1",
    "uni_pc_skip_type": "time_uniform", "uni_pc_order": 3, "uni_pc_lower_order_final": True,
    "sd_noise_schedule": "Default", "skip_early_cond": 0.0, "beta_dist_alpha": 0.6, "beta_dist_beta": 0.6,
    # postprocessing
    "postprocessing_enable_in_main_ui": [], "postprocessing_disable_in_extras": [],
    "postprocessing_operation_order": [], "upscaling_max_images_in_cache": 5,
    "postprocessing_existing_caption_action": "Ignore",
}


def register(options) -> int:
    """Adds every key that the options do not define yet as a hidden setting; returns how many were added."""
    from modules.options import OptionInfo
    if "img2img_extra_noise" not in options.info:   # used by the engine: a real, visible setting
        options.add("img2img_extra_noise", OptionInfo(
            0.0, "Extra noise multiplier for img2img and hires fix", section=("img2img", "img2img"),
            minimum=0.0, maximum=1.0).info("0 = off; more noise after the image is noised, for more detail"))
    added = 0
    for key, default in DEFAULTS.items():
        if key not in options.info:
            options.add(key, OptionInfo(default, key, section=HIDDEN_SECTION))
            added += 1
    return added
