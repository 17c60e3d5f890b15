//! `Schedules` on EventBridge Scheduler: one schedule per hourly/daily sync, `sync-<sync_id>`, in one group,
//! targeting the sync-runner with the scheduler role and the input `{"trigger":"schedule",...}`.

use async_trait::async_trait;
use audience_core::ports::{PortError, ScheduleInfo, ScheduleRate, Schedules, schedule_name};
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};

use crate::error::unavailable;

const SERVICE: &str = "EventBridge Scheduler";

#[derive(Clone, Debug)]
pub struct EventBridgeSchedules {
    client: Client,
    group: String,
    target_arn: String,
    role_arn: String,
}

fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// The flexible window spreads the runs of many syncs instead of firing them all on the hour.
fn window_minutes(rate: ScheduleRate) -> i32 {
    match rate {
        ScheduleRate::Hourly => 15,
        ScheduleRate::Daily => 60,
    }
}

fn state_of(enabled: bool) -> ScheduleState {
    if enabled {
        ScheduleState::Enabled
    } else {
        ScheduleState::Disabled
    }
}

fn invalid(e: impl std::fmt::Display) -> PortError {
    PortError::Invalid(e.to_string())
}

/// The exact input the sync-runner receives from a schedule (defined in the port, shared with the fake).
pub use audience_core::ports::schedule_input;

impl EventBridgeSchedules {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> EventBridgeSchedules {
        EventBridgeSchedules {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    async fn fetch(&self, name: &str) -> Result<Option<GetScheduleOutput>, PortError> {
        match self
            .client
            .get_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(None),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }
}

#[async_trait]
impl Schedules for EventBridgeSchedules {
    async fn upsert_schedule(
        &self,
        project_id: &str,
        sync_id: &str,
        rate: ScheduleRate,
        enabled: bool,
    ) -> Result<(), PortError> {
        let name = schedule_name(sync_id);
        if name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(PortError::Invalid(format!(
                "schedule name {name:?} must be at most 64 of [0-9A-Za-z-_.]"
            )));
        }
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Flexible)
            .maximum_window_in_minutes(window_minutes(rate))
            .build()
            .map_err(invalid)?;
        let target = Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(schedule_input(project_id, sync_id))
            .build()
            .map_err(invalid)?;
        let description = format!("audience-sync: sync {sync_id} of project {project_id}");
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(rate.expression())
            .flexible_time_window(window.clone())
            .target(target.clone())
            .state(state_of(enabled))
            .description(&description)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("ConflictException")) => {
                self.client
                    .update_schedule()
                    .name(&name)
                    .group_name(&self.group)
                    .schedule_expression(rate.expression())
                    .flexible_time_window(window)
                    .target(target)
                    .state(state_of(enabled))
                    .description(description)
                    .send()
                    .await
                    .map_err(|e| unavailable(SERVICE, e))?;
                Ok(())
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn set_schedule_enabled(&self, sync_id: &str, enabled: bool) -> Result<bool, PortError> {
        let name = schedule_name(sync_id);
        let Some(current) = self.fetch(&name).await? else {
            return Ok(false);
        };
        // UpdateSchedule replaces the whole definition: send back what is there with only the state changed.
        let res = self
            .client
            .update_schedule()
            .name(&name)
            .group_name(&self.group)
            .set_schedule_expression(current.schedule_expression)
            .set_schedule_expression_timezone(current.schedule_expression_timezone)
            .set_flexible_time_window(current.flexible_time_window)
            .set_target(current.target)
            .set_description(current.description)
            .set_start_date(current.start_date)
            .set_end_date(current.end_date)
            .set_kms_key_arn(current.kms_key_arn)
            .set_action_after_completion(current.action_after_completion)
            .state(state_of(enabled))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(false),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn delete_schedule(&self, sync_id: &str) -> Result<(), PortError> {
        match self
            .client
            .delete_schedule()
            .name(schedule_name(sync_id))
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(code(&e), Some("ResourceNotFoundException")) => Ok(()),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn get_schedule(&self, sync_id: &str) -> Result<Option<ScheduleInfo>, PortError> {
        let name = schedule_name(sync_id);
        let Some(out) = self.fetch(&name).await? else {
            return Ok(None);
        };
        let target = out.target.as_ref();
        Ok(Some(ScheduleInfo {
            name: out.name.clone().unwrap_or(name),
            expression: out.schedule_expression.clone().unwrap_or_default(),
            enabled: out.state == Some(ScheduleState::Enabled),
            input: target.and_then(|t| t.input.clone()).unwrap_or_default(),
            target_arn: target.map(|t| t.arn.clone()).unwrap_or_default(),
            role_arn: target.map(|t| t.role_arn.clone()).unwrap_or_default(),
            flexible_window_minutes: out
                .flexible_time_window
                .as_ref()
                .and_then(|w| w.maximum_window_in_minutes),
        }))
    }
}
