// Test a job: choosing a job puts its example payload in the editor.
document.addEventListener("change", (event) => {
  const select = event.target;
  if (select.id !== "job") return;
  const payload = document.getElementById("payload");
  if (payload) payload.value = JSON.parse(select.selectedOptions[0].dataset.example);
});
