//! Disconnect with "keep the run history": the runs stay readable in the console, the project stays listed,
//! and the history can be deleted from its page.

use super::http::{Console, csrf_of, first_export_succeeds, group};
use super::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_can_keep_the_run_history_and_the_console_shows_it() {
    let st = support::start(&["--tiktok-rules", support::NO_PROCESSING]).await;
    let p = support::project();
    let cohort = support::cohort();
    let sid = st.connected_on_upload_sync(&p, &cohort).await;
    let e = first_export_succeeds(&st, &p, &sid, &cohort).await;
    let audience = st.sync(&p, &sid).await["tiktok_audience_id"].clone();

    let c = Console::signed_in(&st).await;
    let project = format!("/console/projects/{p}");
    let (_, page, _) = c.get(&project).await;
    assert!(
        page.contains("name=\"keep_history\""),
        "the disconnect form offers it"
    );
    let csrf = csrf_of(&page);
    let (status, location) = c
        .submit(
            &format!("{project}/disconnect"),
            &[("csrf", csrf.as_str()), ("keep_history", "true")],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("{project}?done=disconnected").as_str())
    );
    assert_eq!(st.integration(&p).await["status"], "not_connected");

    // The project page lists the kept history; the projects page still lists the project.
    let (_, page, _) = c.get(&project).await;
    let history = format!("{project}/history/{sid}");
    assert!(
        page.contains("Kept run history") && page.contains(&history),
        "{page}"
    );
    let (_, projects, _) = c.get("/console").await;
    assert!(
        projects.contains(&project),
        "a project with kept history stays listed"
    );
    // Its page shows the run with its counts, and the audience id kept on TikTok.
    let (status, kept, _) = c.get(&history).await;
    assert_eq!(status, 200, "{kept}");
    assert!(
        kept.contains("s-succeeded") && kept.contains(&group(e.rows)),
        "{kept}"
    );
    assert!(kept.contains(audience.as_str().expect("audience id")));
    // The API agrees.
    let runs =
        st.c.get(&format!("/v1/projects/{p}/syncs/{sid}/runs"))
            .await
            .expect("runs");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");

    // Deleting it from its page removes the runs.
    let csrf = csrf_of(&kept);
    let (status, location) = c
        .submit(&format!("{history}/delete"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some(format!("{project}?done=history_deleted").as_str())
    );
    let (_, page, _) = c.get(&project).await;
    assert!(!page.contains("Kept run history"), "{page}");
    let (status, _, _) = c.get(&history).await;
    assert_eq!(status, 404);
    let gone =
        st.c.api(
            reqwest::Method::GET,
            &format!("/v1/projects/{p}/syncs/{sid}/runs"),
            None,
        )
        .await
        .expect("runs");
    assert_eq!(gone.status, 404);
}
