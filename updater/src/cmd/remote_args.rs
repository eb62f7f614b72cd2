//! The REMOTE flags of the operator commands (docs/cli.md): `--config FILE`
//! (the device config: its remote settings and trusted keys) and/or flags
//! that override it.

use std::path::PathBuf;

use abnix_formats::sign::{PublicKey, TrustedKeys};
use abnix_updater::channel::Channel;
use abnix_updater::config::Config;
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RetryPolicy, Timeouts, TransferLimits,
};
use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct RemoteArgs {
    /// Device config file (TOML), with its drop-ins: only its remote
    /// settings and trusted keys are used; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// S3 endpoint URL (omit for AWS S3).
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    bucket: Option<String>,
    /// Key prefix of everything abnix stores in the bucket.
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long)]
    channel: Option<String>,
    /// Path-style addressing (MinIO, Garage, s3s-fs).
    #[arg(long)]
    path_style: bool,
    /// S3 credentials file (TOML, mode 0600) instead of the config's source.
    #[arg(long, conflicts_with_all = ["anonymous", "aws_profile"])]
    credentials: Option<PathBuf>,
    /// This profile of the AWS shared credentials and config files
    /// (~/.aws/credentials, ~/.aws/config) instead of the config's source.
    #[arg(long, value_name = "NAME", conflicts_with = "anonymous")]
    aws_profile: Option<String>,
    /// Unsigned requests (a public bucket).
    #[arg(long)]
    anonymous: bool,
    /// A public key to trust (name:base64), in addition to the config's.
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
}

impl RemoteArgs {
    /// The remote settings and trusted keys: the config file's, overridden
    /// by the flags.
    pub fn resolve(&self) -> anyhow::Result<(RemoteConfig, TrustedKeys)> {
        let (mut remote, mut keys) = match &self.config {
            Some(path) => {
                let config = Config::load(path)?;
                let remote = match config.remote {
                    Some(remote) => remote,
                    None => self
                        .remote_from_flags()
                        .context("the config names no bucket")?,
                };
                (remote, config.trusted_keys)
            }
            None => (self.remote_from_flags()?, TrustedKeys::new()),
        };
        let overrides = [
            (&self.region, &mut remote.region),
            (&self.bucket, &mut remote.bucket),
            (&self.prefix, &mut remote.prefix),
            (&self.channel, &mut remote.channel),
        ];
        for (flag, field) in overrides {
            if let Some(value) = flag {
                field.clone_from(value);
            }
        }
        if self.endpoint.is_some() {
            remote.endpoint.clone_from(&self.endpoint);
        }
        remote.path_style |= self.path_style;
        if let Some(path) = &self.credentials {
            remote.credentials = CredentialSource::File(path.clone());
        } else if let Some(profile) = &self.aws_profile {
            remote.credentials = CredentialSource::Profile {
                profile: Some(profile.clone()),
            };
        } else if self.anonymous {
            remote.credentials = CredentialSource::Anonymous;
        }

        for text in &self.trusted_keys {
            let key = PublicKey::parse(text).with_context(|| format!("--trusted-key {text:?}"))?;
            keys.insert(key);
        }
        if keys.is_empty() {
            bail!("no trusted public key: give --trusted-key KEY or a --config with trusted_keys");
        }
        Ok((remote, keys))
    }

    /// The settings without a config file: the flags below are required,
    /// the others take the config file's defaults.
    fn remote_from_flags(&self) -> anyhow::Result<RemoteConfig> {
        let required = |value: &Option<String>, flag: &str| match value {
            Some(value) => Ok(value.clone()),
            None => bail!("{flag} is required without --config"),
        };
        Ok(RemoteConfig {
            endpoint: None,
            region: required(&self.region, "--region")?,
            bucket: required(&self.bucket, "--bucket")?,
            prefix: String::new(),
            channel: required(&self.channel, "--channel")?,
            path_style: false,
            credentials: CredentialSource::Chain,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            limits: TransferLimits::default(),
        })
    }

    /// The channel, connected (no request is sent yet).
    pub fn channel(&self) -> anyhow::Result<Channel> {
        let (config, keys) = self.resolve()?;
        let label = format!("connecting to bucket {}", config.bucket);
        let remote = Remote::new(config).context(label)?;
        Ok(Channel::new(remote, keys))
    }
}

/// `<bucket>/<prefix>/<channel>` for messages.
pub fn channel_label(channel: &Channel) -> String {
    let config = channel.remote().config();
    let meta_key = config.channel_meta_key();
    format!(
        "{}/{}",
        config.bucket,
        meta_key.strip_suffix(".meta").unwrap_or(&meta_key)
    )
}
